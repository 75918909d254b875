"""Write a cube as an analysis-ready Zarr v3 store, atomically.

The store is written under a temporary sibling name and renamed into place only once
every chunk and the consolidated metadata are on disk, so a reader never sees a
half-written store at the final path. Variables carry CF attributes (standard_name,
units, ``_FillValue``, ``grid_mapping``), the grid mapping variable ``spatial_ref`` holds
the CRS WKT and GeoTransform, and the root attributes hold provenance.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from pipeline import __version__

#: CF metadata of the variables the cube stage produces.
REFLECTANCE_ATTRS = {"standard_name": "surface_bidirectional_reflectance", "units": "1"}
BAND_LONG_NAMES = {
    "coastal": "coastal aerosol", "blue": "blue", "green": "green", "red": "red",
    "rededge1": "red edge 1", "rededge2": "red edge 2", "rededge3": "red edge 3", "nir": "near infrared (broad)",
    "nir08": "near infrared (narrow, 0.86 um)", "nir09": "water vapour (0.94 um)",
    "swir16": "shortwave infrared 1.6 um", "swir22": "shortwave infrared 2.2 um",
}


class StoreError(RuntimeError):
    """A store could not be written or is incomplete."""


def annotate_cf(ds: xr.Dataset) -> xr.Dataset:
    """Add CF attributes and the ``spatial_ref`` grid mapping (needs a CRS via odc-geo/rioxarray)."""
    ds = ds.copy()
    crs = ds.odc.crs
    if crs is None:
        raise StoreError("cube has no CRS; cannot write a grid_mapping")
    ds = ds.rio.write_crs(crs.to_wkt(), grid_mapping_name="spatial_ref")
    ds = ds.rio.write_transform(ds.odc.geobox.affine, grid_mapping_name="spatial_ref")
    for name, var in ds.data_vars.items():
        if name == "spatial_ref":
            continue
        if name in BAND_LONG_NAMES:
            var.attrs.update(REFLECTANCE_ATTRS, long_name=f"surface reflectance, {BAND_LONG_NAMES[name]}")
        if {"y", "x"} <= set(var.dims):
            var.attrs["grid_mapping"] = "spatial_ref"
    ds["x"].attrs.update(standard_name="projection_x_coordinate", long_name="x coordinate of projection", units="m")
    ds["y"].attrs.update(standard_name="projection_y_coordinate", long_name="y coordinate of projection", units="m")
    if "time" in ds.coords:
        ds["time"].attrs.update(standard_name="time", long_name="acquisition time (UTC)")
    for name, coord in ds.coords.items():  # text labels (e.g. sensor): variable-length UTF-8 strings
        if coord.dtype == object:
            ds = ds.assign_coords({name: (coord.dims, np.asarray(coord.values, dtype=np.dtypes.StringDType()), coord.attrs)})
    ds.attrs["Conventions"] = "CF-1.10"
    # CF readers find the grid mapping through grid_mapping; this also makes plain
    # xr.open_zarr() keep spatial_ref as a coordinate, so ds.rio.crs works.
    ds.attrs["coordinates"] = "spatial_ref"
    return ds


def encodings(ds: xr.Dataset, chunks: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per-variable Zarr encodings: chunk shape, fill value, and CF time units."""
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if name in ds.dims and name != "time":
            continue
        e: dict[str, Any] = {}
        if var.dims and name != "time":
            e["chunks"] = tuple(min(chunks.get(d, var.sizes[d]), var.sizes[d]) for d in var.dims)
        if np.issubdtype(var.dtype, np.floating):
            e["_FillValue"] = np.float32(np.nan) if var.dtype == np.float32 else np.nan
        if name == "time":
            e.update(units="seconds since 1970-01-01T00:00:00", calendar="proleptic_gregorian", dtype="int64")
        enc[name] = e
    return enc


def provenance_attrs(request_json: dict, source_items: dict[str, list[str]], extra: dict | None = None) -> dict:
    """Root attributes recording how the store was made."""
    return {
        "title": "eocube analysis-ready data cube",
        "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} created by eocube {__version__}",
        "source": "STAC items listed in eocube:source_items",
        "eocube:version": __version__,
        "eocube:request": json.dumps(request_json, default=str),
        "eocube:source_items": json.dumps(source_items),
        **(extra or {}),
    }


def time_slabs(n_times: int, time_chunk: int, chunks_per_slab: int = 8) -> list[slice]:
    """Consecutive time ranges aligned to the time chunking, written one at a time."""
    step = max(1, time_chunk * chunks_per_slab)
    return [slice(i, min(i + step, n_times)) for i in range(0, n_times, step)]


def write_store(ds: xr.Dataset, path: Path | str, chunks: dict[str, int], *,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``ds`` to a Zarr v3 store at ``path`` atomically (temp name, then rename).

    Metadata and coordinates are written first, then the data in time slabs (region
    writes, computed on the active Dask scheduler); ``progress(done, total)`` is called
    after each slab. Dask chunks equal the Zarr chunks, so no two tasks write one chunk.
    An existing store at ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    ds = annotate_cf(ds)
    ds = ds.chunk({d: chunks[d] for d in ds.dims if d in chunks})
    try:
        ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=encodings(ds, chunks))
        along_time = [v for v in ds.data_vars if "time" in ds[v].dims]
        slabs = time_slabs(ds.sizes["time"], chunks.get("time", 1))
        for i, sl in enumerate(slabs):
            part = ds[along_time].isel(time=sl)
            part = part.drop_vars([c for c in part.coords if "time" not in part[c].dims])
            part.to_zarr(tmp, region={"time": sl}, mode="r+", consolidated=False)
            if progress:
                progress(i + 1, len(slabs))
        with warnings.catch_warnings():  # consolidated metadata is a zarr-python v3 extension; we want it
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(str(tmp), zarr_format=3)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
