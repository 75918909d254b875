"""Open a cube given as a Dataset, a Zarr store or a netCDF file (lazily, Dask-backed).

A store written by the compression stage (bands packed in one video-coded variable) opens
in the cube convention too: one variable per band, decoded chunk by chunk on read. Bands
stored as CF-packed integers (``storage="scaled-int"``) decode to float32 reflectance with
NaN: plain ``xr.open_zarr`` gives float64 there, as JSON attributes carry no float width.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr


def open_cube(cube: xr.Dataset | str | Path) -> xr.Dataset:
    """The cube as a Dataset: returned as is, or opened lazily from a Zarr store / netCDF file."""
    if isinstance(cube, xr.Dataset):
        return cube
    path = Path(cube)
    if not path.exists():
        raise FileNotFoundError(f"cube {path} does not exist")
    if path.suffix == ".zarr" or path.is_dir():
        ds = xr.open_zarr(path, chunks={}, decode_coords="all")
        if "eocube_compression" in ds.attrs:
            from pipeline.compression.stage import split_bands

            ds = split_bands(ds)
        return as_float32_reflectance(ds)
    return xr.open_dataset(path, chunks={}, decode_coords="all")


def as_float32_reflectance(ds: xr.Dataset) -> xr.Dataset:
    """Variables decoded from 8/16-bit CF-packed integers as float32 (lazily), others untouched."""
    packed = [v for v, a in ds.data_vars.items() if "scale_factor" in a.encoding and a.dtype == np.float64
              and np.dtype(a.encoding.get("dtype", np.float64)).itemsize <= 2]
    return ds.assign({v: _with_encoding(ds[v].astype(np.float32), ds[v].encoding) for v in packed}) if packed else ds


def _with_encoding(var: xr.DataArray, encoding: dict) -> xr.DataArray:
    """``var`` keeping the CF packing it was decoded from (scale_factor, add_offset, dtype) in ``encoding``."""
    var.encoding = dict(encoding)
    return var
