"""CF / GeoZarr metadata and per-variable Zarr encodings of a cube.

GeoZarr-compatible: every array has Zarr v3 ``dimension_names`` (written by xarray),
coordinates carry CF ``standard_name``/``units``, data variables point through
``grid_mapping`` at the ``spatial_ref`` variable, which holds ``crs_wkt``, ``spatial_ref``
(WKT) and ``GeoTransform`` (GDAL order), and ``time`` is CF time (int64 seconds since
1970-01-01, proleptic Gregorian).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr


class CRSMissingError(ValueError):
    """The cube has no CRS, so no grid mapping can be written."""


#: CF metadata of the variables the cube stage produces.
REFLECTANCE_ATTRS = {"standard_name": "surface_bidirectional_reflectance", "units": "1"}
BAND_LONG_NAMES = {
    "coastal": "coastal aerosol",
    "blue": "blue",
    "green": "green",
    "red": "red",
    "rededge1": "red edge 1",
    "rededge2": "red edge 2",
    "rededge3": "red edge 3",
    "nir": "near infrared (broad)",
    "nir08": "near infrared (narrow, 0.86 um)",
    "nir09": "water vapour (0.94 um)",
    "swir16": "shortwave infrared 1.6 um",
    "swir22": "shortwave infrared 2.2 um",
}


def annotate_cf(ds: xr.Dataset) -> xr.Dataset:
    """Add CF attributes and the ``spatial_ref`` grid mapping (needs a CRS via odc-geo/rioxarray)."""
    ds = ds.copy()
    crs = ds.odc.crs
    if crs is None:
        raise CRSMissingError("cube has no CRS; cannot write a grid_mapping")
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
    ds = vlen_text_coords(ds)
    ds.attrs["Conventions"] = "CF-1.10"
    # CF readers find the grid mapping through grid_mapping; this also makes plain
    # xr.open_zarr() keep spatial_ref as a coordinate, so ds.rio.crs works.
    ds.attrs["coordinates"] = "spatial_ref"
    return ds


def encodings(
    ds: xr.Dataset, chunks: Mapping[str, int], shards: Mapping[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per-variable Zarr encodings: chunk (and shard) shape, fill value, and CF time units.

    Shards apply to the ``(time, y, x)`` data variables only; coordinates stay unsharded.
    """
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if name in ds.dims and name != "time":
            continue
        e: dict[str, Any] = {}
        if var.dims and name != "time":
            e["chunks"] = tuple(min(chunks.get(str(d), var.sizes[d]), var.sizes[d]) for d in var.dims)
            if shards and name in ds.data_vars and {"y", "x"} <= set(var.dims):
                e["shards"] = tuple(min(shards.get(str(d), var.sizes[d]), var.sizes[d]) for d in var.dims)
        if np.issubdtype(var.dtype, np.floating):
            e["_FillValue"] = np.float32(np.nan) if var.dtype == np.float32 else np.nan
        if name == "time":
            e.update(units="seconds since 1970-01-01T00:00:00", calendar="proleptic_gregorian", dtype="int64")
        enc[str(name)] = e
    return enc


def vlen_text_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with text coordinates (e.g. ``sensor``, ``band``) as variable-length UTF-8 strings.

    Zarr v3 has a stable variable-length string type; numpy's fixed-width ``<U`` strings would
    be written with zarr's still-unstable fixed-length UTF-32 type (and a warning).
    """
    for name, coord in ds.coords.items():
        if coord.dtype.kind in "OU":
            ds = ds.assign_coords(
                {name: (coord.dims, np.asarray(coord.values, dtype=np.dtypes.StringDType()), coord.attrs)}
            )
    return ds
