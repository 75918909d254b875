"""Inference engine: cube (Zarr store or Dataset) -> embeddings DataArray -> Zarr store.

The cube is read lazily (``xr.open_zarr``); the output grid is tiled into chips (:mod:`tiling`), chips
are grouped into batches along x, and each batch is one Dask task that reads only its window, runs
the encoder (loaded once per worker process by :func:`load_encoder`'s cache) on CUDA with bf16
autocast or on CPU in fp32, and returns its kept cells. Tasks carry ``resources={"GPU": 1}`` only
when a GPU device is requested, so the graph also runs on CPU-only clusters.

Output dims: ``(y, x, dim)`` for pixel models (Presto), ``(patch_y, patch_x, dim)`` for patch
models (Galileo, Prithvi); attributes record the model, its config, the weights sha256 and the pooling.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import torch
import xarray as xr
import zarr

from pipeline.embeddings.chips import ChipBatch
from pipeline.embeddings.registry import load_encoder, spec_for
from pipeline.embeddings.spec import Adapter, EncoderInfo
from pipeline.embeddings.tiling import Window, axis_windows, latlon_grid, pixel_centres, time_features
from pipeline.store.open import open_cube

CUBE_BANDS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22")


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to rebuild the model and adapter (hashable, cheap to ship)."""

    model: str
    weights_path: str
    device: str
    compile_model: bool
    chip: int
    patch_size: int


def make_adapter(info: EncoderInfo, patch_size: int) -> Adapter:
    """The adapter of a loaded model, from its spec (``patch_size``: the requested patch in pixels,
    for models whose patch is free)."""
    return spec_for(info.name).adapter(info, patch_size)


def auto_batch_size(info: EncoderInfo, chip: int, n_times: int, unit: int, device: torch.device) -> int:
    """Chips per forward pass. On CUDA: half the free memory over an activation estimate
    (tokens × width × 16 values + one attention map, bf16); on CPU: a small fixed batch.

    Token counts come from the spec (:class:`~pipeline.embeddings.spec.EncoderSpec`): a pixel model
    runs one short sequence per pixel (its attention maps are negligible), a patch model one
    sequence per chip."""
    if device.type != "cuda":
        return 4 if info.kind == "pixel" else 2
    free, _ = torch.cuda.mem_get_info(device)
    spec = spec_for(info.name)
    if info.kind == "pixel":
        tokens_per_chip = chip * chip * (spec.tokens_per_step * n_times + spec.extra_tokens)
        per_chip = tokens_per_chip * info.embed_dim * 16 * 2
    else:
        tokens = (chip // unit) ** 2 * n_times * spec.tokens_per_step + spec.extra_tokens
        per_chip = (tokens * info.embed_dim * 16 + tokens * tokens) * 2
    return int(max(1, min(256, free // 2 // per_chip)))


def _check_cube(ds: xr.Dataset) -> tuple[list[str], str]:
    missing = [d for d in ("time", "y", "x") if d not in ds.dims]
    if missing:
        raise ValueError(f"cube lacks dimension(s) {missing}; expected (time, y, x)")
    bands = [b for b in CUBE_BANDS if b in ds.data_vars]
    if not bands:
        raise ValueError(f"cube has no band variables (expected some of {CUBE_BANDS}); has {list(ds.data_vars)}")
    crs = ds.odc.crs
    if crs is None:
        raise ValueError("cube has no CRS (no spatial_ref / odc crs); cannot compute lat/lon")
    return bands, crs.to_wkt()


def _embed_group(
    block: np.ndarray, spec: EngineSpec, bands: tuple[str, ...], geo: dict, yw: Window, xws: tuple[Window, ...]
) -> np.ndarray:
    """One task: ``block [band, T, rows, cols]`` read from the cube -> kept cells ``[r, c, D]``."""
    device = torch.device(spec.device)
    model, info = load_encoder(spec.model, spec.weights_path, device, compile_model=spec.compile_model)
    adapter = make_adapter(info, spec.patch_size)
    chip, u, x0 = spec.chip, adapter.unit, xws[0].start
    span = xws[-1].start + chip - x0
    padded = np.full(block.shape[:2] + (chip, span), np.nan, np.float32)
    padded[:, :, : block.shape[2], : block.shape[3]] = block
    chips = np.stack([padded[..., xw.start - x0 : xw.start - x0 + chip] for xw in xws], axis=0)  # [B, band, T, h, w]
    ys = pixel_centres(geo["y"], yw.start, chip)
    lat, lon = zip(*(latlon_grid(pixel_centres(geo["x"], xw.start, chip), ys, geo["crs"]) for xw in xws), strict=True)
    batch = ChipBatch(
        {b: chips[:, i] for i, b in enumerate(bands)},
        geo["month"],
        geo["year"],
        geo["doy"],
        np.stack(lat),
        np.stack(lon),
        geo["res_m"],
    )
    emb = adapter.embed(model, batch, device)  # [B, chip/u, chip/u, D]
    rows = slice((yw.keep_start - yw.start) // u, (yw.keep_stop - yw.start) // u)
    parts = [emb[i, rows, (xw.keep_start - xw.start) // u : (xw.keep_stop - xw.start) // u] for i, xw in enumerate(xws)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def embed_cube(
    cube: xr.Dataset | str | Path,
    model: str = "presto",
    weights: str | Path | None = None,
    *,
    device: str | None = None,
    chip_size: int | None = None,
    overlap: int = 0,
    batch_size: int | None = None,
    patch_size: int = 4,
    compile_model: bool = False,
    allow_download: bool = False,
) -> xr.DataArray:
    """Lazy (Dask-backed) embeddings of a cube following the cube convention.

    ``cube``: a Dataset or the path of a cube Zarr store (read lazily). ``model``: see
    :data:`~pipeline.embeddings.registry.MODELS`. ``chip_size``/``overlap`` in pixels (default chip: the
    model spec's ``default_chip``: Presto 64, Galileo 4 patches, Prithvi its ``img_size``; pixel models
    take no overlap); ``batch_size`` chips per task (auto when None); ``patch_size`` is Galileo's p.
    Returns float32 ``(y, x, dim)`` or ``(patch_y, patch_x, dim)``, NaN where a cell never had a valid
    observation. Compute it (or call :func:`write_embeddings`).
    """
    ds = open_cube(cube)
    bands, crs_wkt = _check_cube(ds)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = dev if dev.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")
    _, info = load_encoder(
        model, weights, here, allow_download=allow_download
    )  # validates; shared with threaded workers
    adapter = make_adapter(info, patch_size)
    u = adapter.unit
    chip = chip_size or spec_for(info.name).default_chip(info, u)
    if info.kind == "pixel":
        overlap = 0  # pixels are independent: overlap would only repeat work
    n_t, n_y, n_x = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    y_wins, x_wins = axis_windows(n_y, chip, overlap, u), axis_windows(n_x, chip, overlap, u)
    per_task = batch_size or auto_batch_size(info, chip, n_t, u, dev)
    spec = EngineSpec(info.name, info.weights_path, str(dev), compile_model, chip, patch_size)
    feats = time_features(ds["time"].values)
    res_m = float(abs(ds["x"].values[1] - ds["x"].values[0])) if n_x > 1 else 10.0
    geo = {"x": ds["x"].values, "y": ds["y"].values, "crs": crs_wkt, "res_m": res_m, **feats}
    stack = xr.concat([ds[b] for b in bands], dim="band").transpose("band", "time", "y", "x")
    if "valid" in ds:
        stack = stack.where(ds["valid"].astype(bool))
    data = stack.astype(np.float32).data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(-1, -1, chip, chip))
    annotations = {"resources": {"GPU": 1}} if dev.type == "cuda" else {}
    rows = []
    with dask.annotate(**annotations):
        for yw in y_wins:
            row = []
            for g in range(0, len(x_wins), per_task):
                xws = tuple(x_wins[g : g + per_task])
                window = data[:, :, yw.start : min(yw.start + chip, n_y), xws[0].start : min(xws[-1].start + chip, n_x)]
                task = dask.delayed(_embed_group, pure=True)(window, spec, tuple(bands), geo, yw, xws)
                shape = (
                    (yw.keep_stop - yw.keep_start) // u,
                    (xws[-1].keep_stop - xws[0].keep_start) // u,
                    info.embed_dim,
                )
                row.append(da.from_delayed(task, shape=shape, dtype=np.float32))
            rows.append(da.concatenate(row, axis=1))
    out = da.concatenate(rows, axis=0)
    attrs = {
        "model": info.name,
        "model_config": json.dumps(info.config, default=str),
        "weights_sha256": info.weights_sha256,
        "weights_file": Path(info.weights_path).name,
        "pooling": adapter.pooling,
        "embedding_kind": info.kind,
        "cell_size_pixels": u,
        "chip_size_pixels": chip,
        "overlap_pixels": overlap,
        "time_start": str(ds["time"].values.min()),
        "time_end": str(ds["time"].values.max()),
        "long_name": f"{info.name} embeddings",
    }
    if info.kind == "pixel":
        return xr.DataArray(out, dims=("y", "x", "dim"), coords={"y": ds["y"].values, "x": ds["x"].values}, attrs=attrs)
    n_py, n_px = out.shape[:2]
    py = pixel_centres(ds["y"].values, 0, n_py * u).reshape(n_py, u).mean(1)
    px = pixel_centres(ds["x"].values, 0, n_px * u).reshape(n_px, u).mean(1)
    return xr.DataArray(out, dims=("patch_y", "patch_x", "dim"), coords={"patch_y": py, "patch_x": px}, attrs=attrs)


def write_embeddings(
    store: str | Path,
    model: str = "presto",
    weights: str | Path | None = None,
    *,
    name: str = "embeddings",
    overwrite: bool = False,
    chunk_cells: int = 256,
    **kwargs,
) -> xr.DataArray:
    """Compute :func:`embed_cube` on the store and add it as variable ``name``; returns it (lazy, from the store).

    Runs on the current Dask scheduler/client. The store's consolidated metadata is refreshed.
    """
    path = Path(store)
    emb = embed_cube(path, model, weights, **kwargs)
    existing = xr.open_zarr(path, chunks={})
    if name in existing.variables and not overwrite:
        raise FileExistsError(f"{path} already has a variable {name!r}; pass overwrite=True or another name")
    out = emb.chunk({emb.dims[0]: chunk_cells, emb.dims[1]: chunk_cells, "dim": -1}).to_dataset(name=name)
    out = out.drop_vars([c for c in out.coords if c in existing.variables])
    out[name].encoding = {}
    out.to_zarr(path, mode="a", consolidated=False, zarr_format=3)
    with warnings.catch_warnings():  # consolidated metadata is a zarr-python v3 extension
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path), zarr_format=3)
    return xr.open_zarr(path, chunks={})[name]
