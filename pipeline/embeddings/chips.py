"""What every model adapter shares: the cube chips (:class:`ChipBatch`) and the helpers to feed them.

A :class:`ChipBatch` holds ``B`` chips of ``T`` steps of harmonised reflectance (NaN = masked). Each
model module (:mod:`~pipeline.embeddings.presto`, :mod:`~pipeline.embeddings.galileo`,
:mod:`~pipeline.embeddings.prithvi`) defines its own adapter, which turns a batch into the model's
tensors, runs the model and returns ``[B, h/unit, w/unit, D]`` float32 embeddings (NaN where a cell
never had a valid observation). Missing bands, modalities (S1, ERA5, SRTM, Dynamic World, ...) and
cloudy steps are *masked* the way each model expects, never invented.

This module imports no other module of the package, so the spec, the engine and every model can import it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

#: Cube common band name -> Sentinel-2 band name used by Presto and Galileo.
CUBE_TO_S2: dict[str, str] = {
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "rededge1": "B5",
    "rededge2": "B6",
    "rededge3": "B7",
    "nir": "B8",
    "nir08": "B8A",
    "swir16": "B11",
    "swir22": "B12",
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


def autocast(device: torch.device):
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


def ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    """``(nir - red) / (nir + red)`` as float32; 0 where ``nir + red <= 0``."""
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (nir - red) / np.where(total > 0, total, 1), 0).astype(np.float32)


def latlon_to_cartesian(latlons: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` (lat, lon) degrees -> ``[..., 3]`` unit vector ``(cosφcosλ, cosφsinλ, sinφ)``."""
    lat, lon = torch.deg2rad(latlons[..., 0]), torch.deg2rad(latlons[..., 1])
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=-1)
