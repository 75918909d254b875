"""From cube chips (harmonised reflectance, NaN = masked) to each model's input contract, and back.

A :class:`ChipBatch` holds ``B`` chips of ``T`` steps; each adapter turns it into the model's tensors,
runs the model and returns ``[B, h/unit, w/unit, D]`` float32 embeddings (NaN where a cell never had a
valid observation). Missing bands, modalities (S1, ERA5, SRTM, Dynamic World, ...) and cloudy steps
are *masked* the way each model expects, never invented.

Normalisation constants and their sources:

* Presto: ``(x + add) / div`` of ``presto/dataops/pipelines/s1_s2_era5_srtm.py`` (S2: DN / 1e4, i.e.
  reflectance in [0, 1]); NDVI recomputed from the normalised B8 and B4.
* Galileo: ``normalization.json`` of nasaharvest/galileo (mean ± 2 std, see :class:`GalileoNormalizer`),
  applied to DN (= reflectance × 1e4), as the authors' ``Normalizer(std=True, std_multiplier=2)``.
* Prithvi-EO-2.0: HLS mean / std of terratorch ``prithvi_vit.py`` (DN = reflectance × 1e4).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.embeddings.galileo import (SPACE_BANDS, SPACE_TIME_BANDS, SPACE_TIME_GROUPS, STATIC_BANDS,
                                         TIME_BANDS, GalileoNormalizer)
from pipeline.embeddings.presto import DW_MISSING, PRESTO_BANDS, latlon_to_cartesian
from pipeline.embeddings.prithvi import PRITHVI_BANDS, PRITHVI_V2_MEAN, PRITHVI_V2_STD

#: Cube common band name -> Sentinel-2 band name used by Presto and Galileo.
CUBE_TO_S2: dict[str, str] = {
    "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6", "rededge3": "B7",
    "nir": "B8", "nir08": "B8A", "swir16": "B11", "swir22": "B12",
}
DN_PER_REFLECTANCE = 1e4


@dataclass
class ChipBatch:
    """``B`` chips of ``T`` steps: ``bands[name]`` is ``[B, T, h, w]`` reflectance (NaN = masked);
    ``month`` (0 = January), ``year``, ``doy`` are ``[T]``; ``lat``/``lon`` ``[B, h, w]`` degrees;
    ``res_m`` the pixel size in metres."""

    bands: dict[str, np.ndarray]
    month: np.ndarray
    year: np.ndarray
    doy: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    res_m: float

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return next(iter(self.bands.values())).shape


def _autocast(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_device(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """numpy -> tensor on ``device``, through pinned host memory when the target is CUDA."""
    t = torch.from_numpy(np.require(arr, requirements=["C", "W"]))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def s2_reflectance(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cube bands renamed to Sentinel-2 names (only those present)."""
    return {CUBE_TO_S2[k]: v for k, v in bands.items() if k in CUBE_TO_S2}


def _ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (nir - red) / np.where(total > 0, total, 1), 0).astype(np.float32)


# ----------------------------------------------------------------------------------------- Presto
def presto_arrays(s2: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """S2 reflectance ``{B2..B12: [N, T]}`` -> Presto ``x [N, T, 17]`` and ``mask [N, T, 17]`` (1 = missing).

    S1, ERA5 and SRTM have no cube source and are masked; NDVI comes from the normalised B8, B4.
    """
    n, t = next(iter(s2.values())).shape
    x = np.zeros((n, t, len(PRESTO_BANDS)), np.float32)
    mask = np.ones_like(x)
    for name, values in s2.items():
        i = PRESTO_BANDS.index(name)
        ok = np.isfinite(values)
        x[..., i] = np.where(ok, values, 0)  # S2 DN / 1e4 == reflectance
        mask[..., i] = ~ok
    b8, b4 = PRESTO_BANDS.index("B8"), PRESTO_BANDS.index("B4")
    ndvi = PRESTO_BANDS.index("NDVI")
    x[..., ndvi] = _ndvi(x[..., b8], x[..., b4])
    mask[..., ndvi] = np.maximum(mask[..., b8], mask[..., b4])
    return x, mask


def run_presto(model: nn.Module, x: np.ndarray, mask: np.ndarray | None, dynamic_world: np.ndarray,
               months: np.ndarray, latlons: np.ndarray, device: torch.device, batch_size: int = 4096) -> np.ndarray:
    """Pooled Presto embeddings ``[N, 128]`` for normalised inputs, in batches of ``batch_size`` pixels."""
    if x.shape[1] > 24:
        raise ValueError(f"Presto takes at most 24 time steps; got {x.shape[1]} (select or composite steps first)")
    out = []
    with torch.inference_mode(), _autocast(device):
        for s in range(0, x.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            emb = model(to_device(x[sl], device), to_device(dynamic_world[sl].astype(np.int64), device),
                        to_device(latlons[sl].astype(np.float32), device),
                        None if mask is None else to_device(mask[sl].astype(np.float32), device),
                        to_device(months[sl].astype(np.int64), device))
            out.append(emb.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


class PrestoAdapter:
    """Per-pixel Presto embeddings; the pooled token mean (the authors' ``eval_task``) per pixel."""

    kind, unit = "pixel", 1
    pooling = "mean over unmasked tokens incl. latlon, then LayerNorm (Presto eval_task); per pixel"

    def __init__(self, pixel_batch: int = 4096) -> None:
        self.pixel_batch = pixel_batch

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        b, t, h, w = batch.shape
        s2 = {k: v.transpose(0, 2, 3, 1).reshape(-1, t) for k, v in s2_reflectance(batch.bands).items()}
        if not s2:
            raise ValueError(f"Presto needs Sentinel-2-like bands ({', '.join(CUBE_TO_S2)}); cube has {list(batch.bands)}")
        x, mask = presto_arrays(s2)
        months = np.broadcast_to(batch.month, (x.shape[0], t))
        latlons = np.stack([batch.lat.reshape(-1), batch.lon.reshape(-1)], -1)
        dw = np.full((x.shape[0], t), DW_MISSING)
        emb = run_presto(model, x, mask, dw, months, latlons, device, self.pixel_batch)
        any_valid = (mask[..., : PRESTO_BANDS.index("temperature_2m")] == 0).any(axis=(1, 2))
        emb[~any_valid] = np.nan
        return emb.reshape(b, h, w, -1)


# ---------------------------------------------------------------------------------------- Galileo
class GalileoAdapter:
    """Galileo per-patch embeddings (the authors' ``apply_mask_and_average_tokens_per_patch``).

    Space-time: S2 bands and NDVI (S1 masked); a group is hidden in a patch at a step if any of its
    bands is missing anywhere in the patch. Space (SRTM, DW, WC) and time (ERA5, TerraClimate,
    VIIRS) groups are masked; of the static groups only ``location`` (chip centre) is visible.
    """

    kind = "patch"
    pooling = "per-patch mean of unmasked tokens (Galileo apply_mask_and_average_tokens_per_patch)"

    def __init__(self, normalizer: GalileoNormalizer, patch_size: int = 4) -> None:
        self.normalizer = normalizer
        self.unit = patch_size

    def inputs(self, batch: ChipBatch) -> dict[str, np.ndarray]:
        b, t, h, w = batch.shape
        p = self.unit
        raw = np.zeros((b, h, w, t, len(SPACE_TIME_BANDS)), np.float64)
        present = np.zeros_like(raw, dtype=bool)
        s2 = s2_reflectance(batch.bands)
        for name, values in s2.items():
            i = SPACE_TIME_BANDS.index(name)
            v = values.transpose(0, 2, 3, 1)
            present[..., i] = np.isfinite(v)
            raw[..., i] = np.where(present[..., i], v * DN_PER_REFLECTANCE, 0)
        i8, i4, ind = (SPACE_TIME_BANDS.index(k) for k in ("B8", "B4", "NDVI"))
        raw[..., ind] = _ndvi(raw[..., i8], raw[..., i4])
        present[..., ind] = present[..., i8] & present[..., i4]
        s_t_m = np.ones((b, h, w, t, len(SPACE_TIME_GROUPS)), np.float32)
        for g, idx in enumerate(SPACE_TIME_GROUPS.values()):
            ok = present[..., idx].all(-1)  # [b, h, w, t]
            ok_patch = ok.reshape(b, h // p, p, w // p, p, t).all(axis=(2, 4))
            s_t_m[..., g] = np.repeat(np.repeat(~ok_patch, p, axis=1), p, axis=2)
        lat, lon = batch.lat.mean(axis=(1, 2)), batch.lon.mean(axis=(1, 2))
        st = np.zeros((b, len(STATIC_BANDS)), np.float64)
        st[:, 1:4] = latlon_to_cartesian(torch.from_numpy(np.stack([lat, lon], -1))).numpy()
        return {
            "s_t_x": self.normalizer(raw), "sp_x": self.normalizer(np.zeros((b, h, w, len(SPACE_BANDS)))),
            "t_x": self.normalizer(np.zeros((b, t, len(TIME_BANDS)))), "st_x": self.normalizer(st),
            "s_t_m": s_t_m, "sp_m": np.ones((b, h, w, 3), np.float32), "t_m": np.ones((b, t, 3), np.float32),
            "st_m": np.tile(np.array([1, 0, 1, 1], np.float32), (b, 1)),
            "months": np.broadcast_to(batch.month.astype(np.int64), (b, t)),
        }

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        b, t, h, w = batch.shape
        if h != w:
            raise ValueError(f"Galileo chips must be square; got {h}x{w}")
        inp = self.inputs(batch)
        names = ("s_t_x", "sp_x", "t_x", "st_x", "s_t_m", "sp_m", "t_m", "st_m", "months")
        with torch.inference_mode(), _autocast(device):
            out = model(*(to_device(inp[k], device) for k in names), self.unit, batch.res_m)
            emb = out.pooled_per_patch().float().cpu().numpy()
        p = self.unit
        emb = emb.reshape(b, h // p, w // p, -1)
        seen = (inp["s_t_m"][:, ::p, ::p] == 0).any(axis=(3, 4))
        emb[~seen] = np.nan
        return emb


# ---------------------------------------------------------------------------------------- Prithvi
class PrithviAdapter:
    """Prithvi-EO-2.0 per-patch embeddings: final-normed patch tokens averaged over frames.

    Bands blue, green, red, nir08 (NIR narrow; ``nir`` if absent), swir16, swir22 as DN; masked
    pixels are set to the band mean (0 after normalisation): Prithvi has no mask input.
    Temporal (year, day of year) and location (chip centre) coordinates feed the -TL models.
    """

    kind = "patch"
    pooling = "patch tokens (final LayerNorm) averaged over frames; CLS dropped"

    def __init__(self, patch_size: int) -> None:
        self.unit = patch_size

    def inputs(self, batch: ChipBatch) -> dict[str, np.ndarray]:
        bands = dict(batch.bands)
        if "nir08" not in bands and "nir" in bands:
            bands["nir08"] = bands["nir"]
        missing = [k for k in PRITHVI_BANDS if k not in bands]
        if missing:
            raise ValueError(f"Prithvi needs bands {PRITHVI_BANDS}; the cube lacks {missing}")
        raw = np.stack([bands[k] for k in PRITHVI_BANDS], axis=1) * DN_PER_REFLECTANCE  # [B, 6, T, h, w]
        mean = np.asarray(PRITHVI_V2_MEAN)[None, :, None, None, None]
        std = np.asarray(PRITHVI_V2_STD)[None, :, None, None, None]
        x = np.nan_to_num((raw - mean) / std, nan=0.0).astype(np.float32)
        b, t = x.shape[0], x.shape[2]
        tc = np.stack(np.broadcast_arrays(batch.year[None], batch.doy[None]), -1).astype(np.float32)
        tc = np.broadcast_to(tc, (b, t, 2))
        lc = np.stack([batch.lat.mean(axis=(1, 2)), batch.lon.mean(axis=(1, 2))], -1).astype(np.float32)
        valid = np.isfinite(raw).all(axis=1)  # [B, T, h, w]
        return {"x": x, "temporal_coords": tc, "location_coords": lc, "valid": valid}

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        inp = self.inputs(batch)
        b, _, t, h, w = inp["x"].shape
        p = self.unit
        with torch.inference_mode(), _autocast(device):
            tokens = model(to_device(inp["x"], device), to_device(inp["temporal_coords"], device),
                           to_device(inp["location_coords"], device))
        grid = (t, h // p, w // p)
        patches = tokens[:, 1:].float().reshape(b, *grid, -1).mean(1).cpu().numpy()
        valid = inp["valid"][:, :, : grid[1] * p, : grid[2] * p]
        seen = valid.reshape(b, t, grid[1], p, grid[2], p).any(axis=(1, 3, 5))
        patches[~seen] = np.nan
        return patches
