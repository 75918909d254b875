"""Open a cube given as a Dataset, a Zarr store or a netCDF file (lazily, Dask-backed).

A store written by the compression stage (bands packed in one video-coded variable) opens
in the cube convention too: one variable per band, decoded chunk by chunk on read.
"""
from __future__ import annotations

from pathlib import Path

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
        return ds
    return xr.open_dataset(path, chunks={}, decode_coords="all")
