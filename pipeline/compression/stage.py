"""Pipeline stage: a cube (Dataset or store path) -> a video-compressed Zarr v3 store, and back.

Reflectance bands (float variables on ``(time, y, x)``) are stacked into one ``reflectance``
variable ``(band, time, y, x)`` coded lossy (or lossless) with the ``eocube.video`` codec in chunks
``(band, time_chunk, <=256, <=256)``; integer/bool variables on ``(time, y, x)`` (``valid``, class
maps) are coded lossless with ffv1; everything else (coordinates, ``spatial_ref``) is stored as is.
``open_compressed`` reopens the store lazily with one Dask task per chunk.
"""
from __future__ import annotations

import json
import time as timer
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.compression.codec import CodecParams
from pipeline.compression.metrics import psnr
from pipeline.compression.ratecontrol import choose_qp
from pipeline.compression.video import QP_MAX, QP_MIN
from pipeline.compression.zarr_codec import VideoCodec
from pipeline.cube.source import open_cube
from pipeline.store.cf import vlen_text_coords

CUBE_DIMS = ("time", "y", "x")
STACKED = "reflectance"


@dataclass
class CompressionSummary:
    """What was written: settings, chosen QP (and whether the KLT was used), sizes and (for lossy) the sample quality."""

    store: str
    mode: str
    qp: int | None
    klt: bool | None
    bands: list[str]
    lossless_variables: list[str]
    stored_bytes: int
    raw_bytes: int
    bpppb: float
    sample_psnr: float | None
    psnr: float | None
    psnr_peak: float
    seconds: float


def split_variables(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """Names of the float band variables and of the integer/bool variables on (time, y, x)."""
    cube_vars = [n for n, v in ds.data_vars.items() if v.dims == CUBE_DIMS]
    bands = [n for n in cube_vars if np.issubdtype(ds[n].dtype, np.floating)]
    others = [n for n in cube_vars if n not in bands]
    if not bands:
        raise ValueError(f"cube has no float variables on dims {CUBE_DIMS}; found {list(ds.data_vars)}")
    return bands, others


def sample_blocks(stack: xr.DataArray, chunks: tuple[int, int, int], n: int) -> list[np.ndarray]:
    """Up to ``n`` chunk-shaped blocks (band, time, y, x) spread evenly over the chunk grid."""
    starts = [range(0, stack.sizes[d], c) for d, c in zip(CUBE_DIMS, chunks)]
    grid = [(t, y, x) for t in starts[0] for y in starts[1] for x in starts[2]]
    picks = [grid[i] for i in np.unique(np.linspace(0, len(grid) - 1, min(n, len(grid))).round().astype(int))]
    return [np.asarray(stack.isel(time=slice(t, t + chunks[0]), y=slice(y, y + chunks[1]),
                                  x=slice(x, x + chunks[2])).values) for t, y, x in picks]


def compress_cube(cube: xr.Dataset | str | Path, out: str | Path, params: CodecParams = CodecParams(),
                  target_psnr: float | None = None, target_bpppb: float | None = None, time_chunk: int = 32,
                  space_chunk: int = 256, n_sample_chunks: int = 8, measure: bool = True) -> CompressionSummary:
    """Write ``cube`` to the Zarr v3 store ``out`` with the video codec; return a summary.

    With ``target_psnr`` (dB, peak = width of ``params.value_range``) or ``target_bpppb`` the QP is
    chosen by rate control on ``n_sample_chunks`` sample chunks; otherwise ``params.qp`` is used.
    With ``measure`` the store is read back and the whole-cube PSNR reported (lossy mode); a PSNR
    target the sample chunks met but the whole cube misses is met by rewriting one QP finer at a time,
    and a bpppb target the whole cube exceeds by rewriting one QP coarser at a time.
    """
    t0 = timer.perf_counter()
    ds = open_cube(cube)
    bands, others = split_variables(ds)
    if time_chunk < 1 or space_chunk < 16:
        raise ValueError("time_chunk must be >= 1 and space_chunk >= 16")
    stack = xr.concat([ds[b] for b in bands], dim="band").assign_coords(band=bands)
    stack = stack.transpose("band", *CUBE_DIMS)
    chunks = tuple(min(c, stack.sizes[d]) for d, c in zip(CUBE_DIMS, (time_chunk, space_chunk, space_chunk)))
    peak = params.value_range[1] - params.value_range[0]
    sample_psnr = None
    if params.mode == "lossy" and (target_psnr is not None or target_bpppb is not None):
        point = choose_qp(sample_blocks(stack, chunks, n_sample_chunks), params, peak, target_psnr, target_bpppb)
        params, sample_psnr = replace(params, qp=point.qp, klt=point.klt), point.psnr
    reference = stack.values if measure and params.mode == "lossy" else None
    n_samples = int(np.prod(stack.shape))
    while True:
        stored = _write_store(ds, stack, bands, others, chunks, params, out)
        full_psnr = None if reference is None else psnr(reference, xr.open_zarr(out)[STACKED].values, peak)
        if target_psnr is not None and full_psnr is not None and full_psnr < target_psnr and params.qp > QP_MIN:
            params = replace(params, qp=params.qp - 1)  # the whole cube misses a PSNR its samples met
        elif (target_bpppb is not None and params.mode == "lossy" and 8.0 * stored / n_samples > target_bpppb
              and params.qp < QP_MAX):
            params = replace(params, qp=params.qp + 1)  # ... or exceeds a rate its samples kept to
        else:
            break
    return CompressionSummary(
        store=str(out), mode=params.mode, qp=params.qp if params.mode == "lossy" else None,
        klt=params.klt if params.mode == "lossy" else None, bands=bands,
        lossless_variables=others, stored_bytes=stored, raw_bytes=n_samples * stack.dtype.itemsize,
        bpppb=8.0 * stored / n_samples, sample_psnr=sample_psnr, psnr=full_psnr, psnr_peak=peak,
        seconds=round(timer.perf_counter() - t0, 2))


def _write_store(ds: xr.Dataset, stack: xr.DataArray, bands: list[str], others: list[str], chunks: tuple[int, ...],
                 params: CodecParams, out: str | Path) -> int:
    """Write the video-coded ``stack`` and the losslessly coded ``others`` to ``out``; bytes of the video chunks."""
    lossless = VideoCodec(params=replace(CodecParams(mode="lossless"), threads=params.threads))
    out_ds = ds.drop_vars(bands).assign({STACKED: stack.chunk(dict(zip(("band", *CUBE_DIMS), (len(bands), *chunks))))})
    out_ds[STACKED].attrs = {"long_name": "stacked bands", "bands": bands}
    encoding = {STACKED: {"serializer": VideoCodec(params=params), "compressors": None,
                          "chunks": (len(bands), *chunks)}}
    for name in others:
        out_ds[name] = out_ds[name].chunk(dict(zip(CUBE_DIMS, chunks)))
        encoding[name] = {"serializer": lossless, "compressors": None, "chunks": chunks}
    for name in out_ds.variables:
        out_ds[name].encoding = {}
    out_ds.attrs["eocube_compression"] = json.dumps({"codec": VideoCodec(params=params).to_dict(),
                                                     "bands": bands, "lossless": others})
    vlen_text_coords(out_ds).to_zarr(out, mode="w", zarr_format=3, encoding=encoding, consolidated=True)
    return sum(f.stat().st_size for f in Path(out, STACKED).rglob("*") if f.is_file() and f.name != "zarr.json")


def open_compressed(store: str | Path, split: bool = True) -> xr.Dataset:
    """Open a compressed store lazily; with ``split`` one variable per band as in the cube convention.

    Splitting decodes a chunk once per band that is read; keep ``split=False`` and select
    from the stacked variable to decode each chunk once.
    """
    ds = xr.open_zarr(store, decode_coords="all")
    return split_bands(ds) if split else ds


def split_bands(ds: xr.Dataset) -> xr.Dataset:
    """The stacked video variable of an opened compressed store as one variable per band (lazy)."""
    if STACKED not in ds:
        return ds
    stack = ds[STACKED]
    bands = {str(b): stack.sel(band=b, drop=True) for b in stack["band"].values}
    out = ds.drop_vars([STACKED, "band"]).assign(bands)
    return out[[*bands, *[v for v in out.data_vars if v not in bands]]]


def summary_dict(summary: CompressionSummary) -> dict:
    """Summary as a JSON-ready dict."""
    return asdict(summary)
