"""Open what eocube wrote (or any cube: a Dataset, a Zarr store, a netCDF file) as a cube, lazily.

* A chain store (the cube in its ``cube`` group, the derived products beside it) opens as its cube.
* A store written by the compression stage (bands packed in one video-coded variable) opens in
  the cube convention too: one variable per band, decoded chunk by chunk on read, each in the
  dtype it was coded from with its fill value where data is missing (:func:`split_bands`).
* Bands stored as CF-packed integers (``storage="scaled-int"``) decode to float32 reflectance
  with NaN: plain ``xr.open_zarr`` gives float64 there, as JSON attributes carry no float width.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

#: the variable of a compressed store holding the bands stacked along ``band``
STACKED = "reflectance"

#: attribute of the stacked variable: JSON of each band's input dtype and fill value (:func:`band_record`),
#: which :func:`split_bands` restores
BAND_DTYPES_ATTR = "band_dtypes"
#: the attribute of a losslessly coded variable (a QA or class layer) recording its input dtype and fill
INPUT_DTYPE_ATTR = "eocube:input_dtype"
#: the group of a chain store holding its cube
CUBE_GROUP = "cube"


def open_cube(cube: xr.Dataset | str | Path) -> xr.Dataset:
    """The cube as a Dataset: returned as is, or opened lazily from a Zarr store / netCDF file."""
    if isinstance(cube, xr.Dataset):
        return cube
    path = Path(cube)
    if not path.exists():
        raise FileNotFoundError(f"cube {path} does not exist")
    if path.suffix == ".zarr" or path.is_dir():
        group = CUBE_GROUP if (path / CUBE_GROUP / "zarr.json").is_file() else None
        ds = xr.open_zarr(path, group=group, chunks={}, decode_coords="all")
        if group is not None:  # the store's provenance (sources, failures, request) is at its root
            ds = ds.assign_attrs(zarr.open_group(str(path), mode="r", use_consolidated=False).attrs.asdict())
        if "eocube_compression" in ds.attrs:
            ds = split_bands(ds)
        return as_fixed_width_strings(as_float32_reflectance(ds))
    return xr.open_dataset(path, chunks={}, decode_coords="all")


def as_float32_reflectance(ds: xr.Dataset) -> xr.Dataset:
    """Variables decoded from 8/16-bit CF-packed integers as float32 (lazily), others untouched."""
    packed = [
        v
        for v, a in ds.data_vars.items()
        if "scale_factor" in a.encoding
        and a.dtype == np.float64
        and np.dtype(a.encoding.get("dtype", np.float64)).itemsize <= 2
    ]
    return ds.assign({v: _with_encoding(ds[v].astype(np.float32), ds[v].encoding) for v in packed}) if packed else ds


def as_fixed_width_strings(ds: xr.Dataset) -> xr.Dataset:
    """Zarr v3 strings (numpy's variable-width ``StringDType``) as fixed-width ``str``, loaded: numpy cannot
    ``.astype(str)`` the former, and most code expects the latter. They are small labels (a date's sensor)."""
    names = [n for n, v in ds.variables.items() if v.dtype.kind == "T"]
    fixed = {n: ds[n].copy(data=np.asarray(ds[n].values).astype(object).astype(str)) for n in names}
    coords = {n: v for n, v in fixed.items() if n in ds.coords}
    return ds.assign_coords(coords).assign({n: v for n, v in fixed.items() if n not in coords}) if fixed else ds


def _with_encoding(var: xr.DataArray, encoding: dict) -> xr.DataArray:
    """``var`` keeping the CF packing it was decoded from (scale_factor, add_offset, dtype) in ``encoding``."""
    var.encoding = dict(encoding)
    return var


def restore_dtype(values: np.ndarray, dtype: np.dtype, missing: np.ndarray, fill: float | None) -> np.ndarray:
    """Decoded ``values`` cast to ``dtype`` (integers rounded and clipped to its range), ``fill`` (None: NaN)
    where ``missing``.

    An integer value that lossy coding moved onto ``fill`` is moved one step off it, towards its decoded
    value: otherwise a valid pixel would read as missing, and the fill marks exactly the missing pixels.
    """
    if np.dtype(dtype).kind == "b":
        out = values > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(values), info.min, info.max).astype(dtype)
        if fill is not None and float(fill).is_integer() and info.min <= fill <= info.max:
            _step_off_fill(out, values, missing, int(fill), info)
    else:
        out = values.astype(dtype)
    if missing.any():
        out[missing] = np.nan if fill is None else fill
    return out


def _step_off_fill(out: np.ndarray, values: np.ndarray, missing: np.ndarray, fill: int, info: np.iinfo) -> None:
    """Move the valid integers of ``out`` equal to ``fill`` one step towards their decoded ``values`` (in place)."""
    hit = (out == fill) & ~missing
    if hit.any():
        up = ((values[hit] >= fill) & (fill < info.max)) | (fill == info.min)
        out[hit] = np.where(up, fill + 1, fill - 1).astype(out.dtype)


def integers_from_floats(values: np.ndarray, dtype: np.dtype, fill: int | None) -> np.ndarray:
    """Decoded float ``values`` (NaN where missing) as ``dtype``: rounded, clipped to its range, ``fill`` where
    missing, and no valid value on ``fill`` (:func:`pipeline.compression.codec.restore_dtype`)."""
    missing = np.isnan(values)
    if fill is None:  # no fill was masked, so nothing decodes as missing
        return restore_dtype(np.where(missing, 0.0, values), dtype, np.zeros_like(missing), None)
    return restore_dtype(np.where(missing, float(fill), values), dtype, missing, fill)


def restored_band(band: xr.DataArray, record: dict | None) -> xr.DataArray:
    """``band`` (decoded floats) in the dtype and with the fill of its :func:`band_record` (lazily), where that
    is an integer dtype it is not in yet; else ``band`` itself."""
    if record is None:
        return band
    dtype = np.dtype(record["dtype"])
    if "packing" in record:  # decoded from CF-packed integers: stays decoded, packs again when written out
        out = band.copy()
        out.encoding = {**band.encoding, **record["packing"]}
        return out
    if band.dtype == dtype or not np.issubdtype(dtype, np.integer):
        return band
    convert = partial(integers_from_floats, dtype=dtype, fill=record["fill"])
    data = band.data
    data = data.map_blocks(convert, dtype=dtype) if hasattr(data, "map_blocks") else convert(np.asarray(data))
    out = band.copy(data=data)
    out.encoding = {**band.encoding, "dtype": dtype}
    if record["fill"] is not None and "_FillValue" not in out.attrs:
        out.encoding["_FillValue"] = record["fill"]  # written back out, the band keeps its fill convention
    return out


def split_bands(ds: xr.Dataset, restore: bool = True) -> xr.Dataset:
    """The stacked video variable of an opened compressed store as one variable per band (lazy).

    With ``restore``, bands recorded as integers (:data:`BAND_DTYPES_ATTR`) are given back in that dtype with
    their fill value where missing (:func:`restored_band`); stores written without the record open as before.
    """
    if restore:  # losslessly coded variables (QA, classes) back in their input dtype and fill
        ds = ds.assign(
            {
                n: restored_band(v, json.loads(v.attrs[INPUT_DTYPE_ATTR]))
                for n, v in ds.data_vars.items()
                if INPUT_DTYPE_ATTR in v.attrs
            }
        )
    if STACKED not in ds:
        return ds
    stack = ds[STACKED]
    attrs = json.loads(stack.attrs.get("band_attrs", "{}"))
    records = json.loads(stack.attrs.get(BAND_DTYPES_ATTR, "{}")) if restore else {}
    bands = {
        str(b): restored_band(stack.sel(band=b, drop=True), records.get(str(b))).assign_attrs(attrs.get(str(b), {}))
        for b in stack["band"].values
    }
    out = ds.drop_vars([STACKED, "band"]).assign(bands)
    return out[[*bands, *[v for v in out.data_vars if v not in bands]]]
