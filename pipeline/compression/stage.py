"""Pipeline stage: a cube (Dataset, DataArray or store path) -> a video-compressed Zarr v3 store, and back.

Band variables on ``(time, y, x)`` (in any order) are stacked into one ``reflectance`` variable
``(band, time, y, x)`` coded lossy (or lossless) with the ``eocube.video`` codec in chunks
``(band, time_chunk, <=256, <=256)``; class, QA and mask variables (``SCL``, ``QA_PIXEL``,
``Fmask``, ``valid``, anything with CF ``flag_*`` attributes, 8-bit and bool arrays) are coded
lossless with ffv1 (:func:`select_variables`); everything else (coordinates, ``spatial_ref``) is
stored as is. ``open_compressed`` reopens the store lazily with one Dask task per chunk.
"""

from __future__ import annotations

import json
import math
import time as timer
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from pipeline.compression.codec import CodecParams
from pipeline.compression.quantise import missing_mask
from pipeline.compression.quicklook import write_comparison
from pipeline.compression.ratecontrol import choose_qp
from pipeline.compression.video import QP_MAX, QP_MIN
from pipeline.compression.zarr_codec import VideoCodec
from pipeline.store.cf import vlen_text_coords
from pipeline.store.open import BAND_DTYPES_ATTR, INPUT_DTYPE_ATTR, STACKED, open_cube, restored_band, split_bands
from pipeline.store.paths import check_not_own_input
from pipeline.store.zarr_store import atomic_store, consolidate, time_slabs, write_in_time_slabs

CUBE_DIMS = ("time", "y", "x")
SPATIAL_DIM_ALIASES = {"lat": "y", "latitude": "y", "lon": "x", "longitude": "x"}
"""Geographic dim names coded as ``y`` / ``x`` and given back on :func:`open_compressed`."""
INPUT_LAYOUT_ATTR = "eocube:input_layout"
"""What :func:`as_dataset` changed to code a cube, undone by :func:`open_compressed`: JSON with
``renamed_dims`` (input name -> coded name), ``dim_order`` (variable -> input dims) and ``added_dims``."""


@dataclass
class CompressionSummary:
    """What was written: settings, chosen QP (and whether the KLT was used), sizes and (for lossy) the quality.

    ``psnr`` (whole cube, as :func:`open_compressed` returns it), ``sample_psnr`` (the rate control's
    sample chunks) and ``target_psnr`` are all in dB at the one peak ``psnr_peak``: the width of
    ``value_range`` (chosen from the sample chunks with ``auto_value_range``).
    """

    store: str
    mode: str
    qp: float | None
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
    quicklook: str | None = None
    value_range: tuple[float, float] | None = None
    target_psnr: float | None = None
    target_bpppb: float | None = None


#: a variable whose lower-cased name contains one of these is a class, QA or mask layer, coded lossless:
#: Sentinel-2 ``SCL``/``MSK_CLDPRB``/``QA60``, Landsat ``QA_PIXEL``/``QA_RADSAT``, HLS ``Fmask``, MODIS
#: ``state_1km``/``QC_500m``, EarthNet/DeepExtremeCubes ``cloudmask_en``, the pipeline's ``valid``
CATEGORICAL_NAME_PARTS = ("scl", "qa", "qc", "mask", "msk", "state", "flag", "class", "label", "valid")
#: CF attributes that mark a variable as flags or classes
CF_FLAG_ATTRS = ("flag_values", "flag_masks", "flag_meanings")


def is_categorical(name: str, var: xr.DataArray) -> bool:
    """Whether ``var`` holds classes, QA bits or a mask rather than a measured quantity.

    True for bool and 8-bit integer arrays, for variables with CF ``flag_*`` attributes and for
    names containing one of :data:`CATEGORICAL_NAME_PARTS` (case-insensitive).
    """
    if var.dtype == bool or (np.issubdtype(var.dtype, np.integer) and var.dtype.itemsize == 1):
        return True
    if any(a in var.attrs for a in CF_FLAG_ATTRS):
        return True
    return any(part in name.lower() for part in CATEGORICAL_NAME_PARTS)


def select_variables(
    ds: xr.Dataset, bands: list[str] | None = None, lossless: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Names of the band variables (video-coded) and of the variables coded lossless, all on (time, y, x).

    By default every numeric variable on the cube dims (in any order) is a band unless
    :func:`is_categorical`; ``bands`` and ``lossless`` name them explicitly instead (the other
    one then defaults to the remaining variables on the cube dims).
    """
    cube_vars = [
        str(n)
        for n, v in ds.data_vars.items()
        if set(v.dims) == set(CUBE_DIMS) and (np.issubdtype(v.dtype, np.number) or v.dtype == bool)
    ]
    for label, names in (("band", bands), ("lossless", lossless)):
        unknown = [n for n in names or [] if n not in cube_vars]
        if unknown:
            raise ValueError(f"unknown {label} variable(s) {unknown}: variables on dims {CUBE_DIMS} are {cube_vars}")
    if bands is not None and lossless is not None and set(bands) & set(lossless):
        raise ValueError(f"variables {sorted(set(bands) & set(lossless))} are named both as bands and as lossless")
    if bands is None:
        bands = [
            n
            for n in cube_vars
            if n not in (lossless if lossless is not None else [])
            and (lossless is not None or not is_categorical(n, ds[n]))
        ]
    if lossless is None:
        lossless = [n for n in cube_vars if n not in bands]
    if not bands:
        raise ValueError(
            f"cube has no band variables on dims {CUBE_DIMS}; data variables: {list(ds.data_vars)} "
            f"(lossless: {lossless}); name them with bands=[...]"
        )
    return list(bands), list(lossless)


def as_dataset(cube: xr.Dataset | xr.DataArray | str | Path) -> xr.Dataset:
    """The cube as a Dataset with its cube variables' dims in (time, y, x) order.

    Geographic dims (``lat``/``latitude``, ``lon``/``longitude``) are renamed ``y``/``x``, variables on
    another order, e.g. ``(time, x, y)``, transposed, and a single image (no ``time`` dim) gets a time
    dim of length 1 on its variables on (y, x); each change is noted in the attribute
    :data:`INPUT_LAYOUT_ATTR` and undone by :func:`open_compressed`.

    A variable (or a DataArray cube) with one dim besides time, y and x, such as stackstac's
    ``(time, band, y, x)``, becomes one variable per entry along it, named by that dim's
    coordinate values (prefixed with the variable's name when the Dataset holds other variables).
    """
    if isinstance(cube, xr.DataArray):
        cube = cube.to_dataset(name=cube.name if cube.name is not None else "data")
    ds = open_cube(cube)
    input_dims = {str(n): [str(d) for d in v.dims] for n, v in ds.data_vars.items()}
    layout: dict = {}
    renamed = {a: d for a, d in SPATIAL_DIM_ALIASES.items() if a in ds.dims and d not in ds.dims}
    if renamed:  # e.g. (time, lat, lon): coded as (time, y, x), named back when the store is opened
        ds, layout["renamed_dims"] = ds.rename(renamed), renamed
    if "time" not in ds.dims and {"y", "x"} <= set(ds.dims):  # one image: coded as a one-date cube
        images = {n: v.expand_dims("time") for n, v in ds.data_vars.items() if {"y", "x"} <= set(v.dims)}
        ds, layout["added_dims"] = ds.assign(images), ["time"]
    missing = [d for d in CUBE_DIMS if d not in ds.dims]
    if missing:
        raise ValueError(f"cube has no {missing} dim(s); its dims are {dict(ds.sizes)}")
    for name, var in list(ds.data_vars.items()):
        extra = [d for d in var.dims if d not in CUBE_DIMS]
        if len(extra) == 1 and set(var.dims) - set(extra) == set(CUBE_DIMS):
            ds = ds.drop_vars([name]).assign(
                _split_along(var, str(extra[0]), prefix=f"{name}_" if len(ds.data_vars) > 1 else "")
            )
            if not any(extra[0] in v.dims for v in ds.data_vars.values()):  # its band coordinates go with it
                ds = ds.drop_vars([c for c, v in ds.coords.items() if extra[0] in v.dims])
    ds = ds.transpose(*CUBE_DIMS, ...)
    as_coded = {n: [renamed.get(d, d) for d in dims] for n, dims in input_dims.items() if n in ds.data_vars}
    moved = {n: input_dims[n] for n, dims in as_coded.items() if dims != [d for d in ds[n].dims if d in dims]}
    if moved:
        layout["dim_order"] = moved
    return ds.assign_attrs({INPUT_LAYOUT_ATTR: json.dumps(layout)}) if layout else ds


def _split_along(var: xr.DataArray, dim: str, prefix: str) -> dict[str, xr.DataArray]:
    """One (time, y, x) variable per entry of ``var`` along ``dim``, named by its coordinate values."""
    labels = [str(v) for v in var[dim].values] if dim in var.coords else [str(i) for i in range(var.sizes[dim])]
    along = [c for c, v in var.coords.items() if dim in v.dims]
    return {f"{prefix}{label}": var.isel({dim: i}).drop_vars(along, errors="ignore") for i, label in enumerate(labels)}


RANGE_HINTS = (1.0, 2.0, 10000.0, 20000.0, 65535.0)
"""Upper bounds suggested first: reflectance, reflectance with bright clouds, DN scaled by 10000, 16-bit."""


def round_up_one_digit(v: float) -> float:
    """``v`` > 0 rounded up to one significant digit (347 -> 400, 0.12 -> 0.2); 0 for ``v`` <= 0."""
    if v <= 0:
        return 0.0
    unit = 10.0 ** np.floor(np.log10(v))
    return float(np.ceil(round(v / unit, 9)) * unit)


#: the clipping of values outside the fixed range may cost at most this PSNR (dB, peak = range width)
MIN_CLIP_PSNR = 60.0


def check_value_range(
    blocks: list[np.ndarray],
    bands: list[str],
    value_range: tuple[float, float],
    nodata: float | None = None,
    max_outside: float = 0.01,
    min_clip_psnr: float = MIN_CLIP_PSNR,
) -> None:
    """Refuse a fixed range the sampled values (finite, not ``nodata``) do not fit in.

    The lossy codec clips values outside ``value_range``. The range is refused when more than
    ``max_outside`` of the values fall outside it (a cube in digital numbers coded on the reflectance
    range 0..1), or when the clipping alone would hold the PSNR (peak = range width) under
    ``min_clip_psnr``: 0.5 % of the values being bright clouds at reflectance 1.3 on 0..1 caps it near
    33.5 dB. A handful of values just outside the range passes.
    """
    finite = _valid_values(blocks, nodata)
    if finite.size == 0:
        return
    lo, hi = value_range
    outside = float(np.mean((finite < lo) | (finite > hi)))
    clip_mse = float(np.mean((finite - np.clip(finite, lo, hi)) ** 2))
    clip_psnr = 10 * np.log10((hi - lo) ** 2 / clip_mse) if clip_mse > 0 else np.inf
    if outside <= max_outside and clip_psnr >= min_clip_psnr:
        return
    hint_lo, hint_hi = usual_range_covering(finite)  # covers every sampled value, so following it passes
    raise ValueError(
        f"{outside:.2%} of the sampled values of bands {bands} lie outside value_range "
        f"{tuple(value_range)} (sampled values {finite.min():g}..{finite.max():g}); the codec "
        f"would clip them, which alone limits the PSNR to {clip_psnr:.1f} dB. Pass a fixed physical "
        f"range covering the data, e.g. value_range=({hint_lo:g}, {hint_hi:g}) "
        f"(CLI: --value-range {hint_lo:g},{hint_hi:g}, or --value-range auto)"
    )


def _valid_values(blocks: list[np.ndarray], nodata: float | None) -> np.ndarray:
    """The finite values of ``blocks`` that are not ``nodata``, flat, float64."""
    return np.concatenate([b[np.isfinite(b) & ~missing_mask(b, nodata)].ravel() for b in blocks]).astype(np.float64)


def _valid_extremes(blocks: list[np.ndarray], nodata: float | None) -> np.ndarray:
    """The smallest and largest finite value of each block that is not ``nodata`` (float64; empty where no
    block has one): all :func:`usual_range_covering` looks at, without gathering every value."""
    out: list[float] = []
    for block in blocks:
        values = block[np.isfinite(block) & ~missing_mask(block, nodata)]
        if values.size:
            out += [float(values.min()), float(values.max())]
    return np.asarray(out, dtype=np.float64)


def usual_range_covering(values: np.ndarray) -> tuple[float, float]:
    """The nearest usual physical range holding every one of ``values``: 0 (or a negative bound rounded
    to one digit) up to the first of :data:`RANGE_HINTS` at most 5 x the maximum, else the maximum
    rounded up to one digit. Reflectance 0..0.9 gives (0, 1), with clouds to 1.9 (0, 2), DN to 18,224
    (0, 20000), a temperature of 330 K (0, 400)."""
    p_lo, p_hi = float(np.min(values)), float(np.max(values))
    hi = next((c for c in RANGE_HINTS if p_hi <= c <= 5 * p_hi), round_up_one_digit(p_hi))
    lo = 0.0 if p_lo >= 0 else -round_up_one_digit(-p_lo)
    return lo, hi if hi > lo else lo + 1.0


#: names a band's fill value goes by, looked up in this order in its attributes, then its encoding
FILL_KEYS = ("_FillValue", "nodata", "missing_value")


def fill_value(var: xr.DataArray, nodata: float | None = None, encoding: bool = True) -> float | None:
    """The fill value of ``var``: the first finite scalar of :data:`FILL_KEYS` in its attributes or (with
    ``encoding``) its encoding (CF, GDAL/rioxarray), else ``nodata`` (the codec's), else None."""
    for key in FILL_KEYS:
        for where in (var.attrs, var.encoding) if encoding else (var.attrs,):
            value = where.get(key)
            if value is not None and np.size(value) == 1 and np.isfinite(float(np.ravel(value)[0])):
                return float(np.ravel(value)[0])
    return None if nodata is None or np.isnan(nodata) else float(nodata)


def band_record(var: xr.DataArray, nodata: float | None = None) -> dict:
    """What a band is given back as: ``{"dtype": name, "fill": value or None}`` (and ``"packing"``: the CF
    packing a band decoded from scaled integers had, put back into its encoding on open).

    An integer band, or a float one xarray decoded from integers by masking their fill (no CF scaling:
    Sentinel-2 DN in a NetCDF with ``_FillValue`` 0), records that integer dtype and its fill value
    (:func:`fill_value`); a float band decoded that way with no fill to put back, and every other float band
    (reflectance, CF-scaled integers), records its float dtype and no fill: NaN marks what is missing.
    """
    encoded = np.dtype(var.encoding.get("dtype", var.dtype))
    scaled = "scale_factor" in var.encoding or "add_offset" in var.encoding
    integer = np.issubdtype(var.dtype, np.integer)
    if not integer and scaled:  # CF-packed integers, decoded: given back decoded, packed again when written out
        packing = {
            k: np.asarray(var.encoding[k]).item()
            for k in ("scale_factor", "add_offset", "_FillValue")
            if k in var.encoding
        }
        return {"dtype": var.dtype.name, "fill": None, "packing": {"dtype": encoded.name, **packing}}
    if not integer and not np.issubdtype(encoded, np.integer):
        return {"dtype": var.dtype.name, "fill": None}
    dtype = var.dtype if integer else encoded
    fill, info = fill_value(var, nodata), np.iinfo(dtype)
    if fill is not None and not (fill.is_integer() and info.min <= fill <= info.max):
        fill = None  # not a value of the dtype: nothing in the data can be it
    if fill is None and not integer:
        return {"dtype": var.dtype.name, "fill": None}
    return {"dtype": dtype.name, "fill": None if fill is None else int(fill)}


def masked_band(var: xr.DataArray, record: dict, nodata: float | None = None) -> xr.DataArray:
    """``var`` as coded, NaN where missing (lazily): an integer band with a fill value as floats (float32 up
    to 16-bit integers, float64 above, so every value stays exact), a float band with NaN also where it holds
    the fill of its attributes or ``nodata``; else unchanged.

    So the codec and the PSNR see exactly the missing pixels as missing, per band, whatever its fill, and
    the codec needs no ``nodata`` of its own (it would put that value, not NaN, where values are missing).
    A float band's encoding is not looked at: a CF ``_FillValue`` there is a packed value, not a decoded one.
    """
    if np.issubdtype(var.dtype, np.integer):
        fill = record["fill"]
    else:
        fill = fill_value(var, nodata, encoding=False) if np.issubdtype(var.dtype, np.floating) else None
    return var if fill is None else var.where(var != fill)


def lossless_grid_from_packing(ds: xr.Dataset, bands: list[str], params: CodecParams) -> CodecParams:
    """``params`` with the lossless grid of bands decoded from CF-packed integers, where none was given.

    Float bands of a ``storage="scaled-int"`` store are ``q * scale_factor + add_offset`` with
    16-bit ``q``: lossless mode then codes ``q`` (step = scale_factor, range from add_offset), so
    ``eocube compress run --mode lossless`` needs no ``--step`` there. Other cases are unchanged.
    """
    if params.mode != "lossless" or params.step is not None:
        return params
    packing = {(ds[b].encoding.get("scale_factor"), ds[b].encoding.get("add_offset", 0.0)) for b in bands}
    scale, offset = next(iter(packing))
    if (
        len(packing) != 1
        or scale is None
        or offset is None
        or not all(np.issubdtype(ds[b].dtype, np.floating) for b in bands)
    ):
        return params
    step, lo = float(scale), float(offset)
    return replace(params, step=step, value_range=(lo, lo + 65535 * step))


def sample_blocks(stack: xr.DataArray, chunks: tuple[int, int, int], n: int) -> list[np.ndarray]:
    """Up to ``n`` chunk-shaped blocks (band, time, y, x) spread evenly over the chunk grid."""
    c = chunks
    starts = [range(0, stack.sizes[d], n) for d, n in zip(CUBE_DIMS, c, strict=True)]
    grid = [(t, y, x) for t in starts[0] for y in starts[1] for x in starts[2]]
    picks = [grid[i] for i in np.unique(np.linspace(0, len(grid) - 1, min(n, len(grid))).round().astype(int))]
    blocks = [stack.isel(time=slice(t, t + c[0]), y=slice(y, y + c[1]), x=slice(x, x + c[2])) for t, y, x in picks]
    return [np.asarray(b.values) for b in dask.compute(*blocks)]  # read together: one pass over the scheduler


@dataclass(frozen=True)
class VideoPlan:
    """How a cube is coded, settled once from its sample chunks: which variables, the codec settings (QP and
    value range chosen), the Zarr chunks ``(time, y, x)`` and each band's input dtype record."""

    bands: list[str]
    others: list[str]
    records: dict[str, dict]
    chunks: tuple[int, int, int]
    params: CodecParams
    peak: float
    sample_psnr: float | None = None
    nodata: float | None = (
        None  #: the input's missing-value marker (the codec itself sees NaN: ``params.nodata`` is None)
    )


def plan_video(
    ds: xr.Dataset,
    params: CodecParams = CodecParams(),
    target_psnr: float | None = None,
    target_bpppb: float | None = None,
    time_chunk: int = 32,
    space_chunk: int = 256,
    n_sample_chunks: int = 8,
    bands: list[str] | None = None,
    lossless: list[str] | None = None,
    auto_value_range: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> VideoPlan:
    """The :class:`VideoPlan` of the cube ``ds`` (as :func:`as_dataset` gives it): variables as
    :func:`select_variables` picks them, the value range checked or (``auto_value_range``) chosen and the QP
    chosen by rate control (:func:`~pipeline.compression.ratecontrol.choose_qp`) on up to
    ``n_sample_chunks`` chunks, read from ``ds`` (lazily backed: only those are read)."""
    bands, others = select_variables(ds, bands, lossless)
    if time_chunk < 1 or space_chunk < 16:
        raise ValueError("time_chunk must be >= 1 and space_chunk >= 16")
    params = lossless_grid_from_packing(ds, bands, params)
    records = {b: band_record(ds[b], params.nodata) for b in bands}
    nodata = params.nodata
    _, stack = coded_stack(ds, VideoPlan(bands, others, records, (1, 1, 1), params, 1.0, nodata=nodata))
    time_c, y_c, x_c = (
        min(c, stack.sizes[d]) for d, c in zip(CUBE_DIMS, (time_chunk, space_chunk, space_chunk), strict=True)
    )
    chunks = (time_c, y_c, x_c)
    params = replace(params, nodata=None)  # what is missing is NaN now, in every band
    sample_psnr = None
    if params.mode == "lossy":
        samples = sample_blocks(stack, chunks, n_sample_chunks)
        valid = _valid_extremes(samples, params.nodata) if auto_value_range else np.empty(0)
        if valid.size:  # a range covering every sampled value: nothing for the check to refuse
            params = replace(params, value_range=usual_range_covering(valid))
        else:
            check_value_range(samples, bands, params.value_range, params.nodata)
    peak = params.value_range[1] - params.value_range[0]
    if params.mode == "lossy" and (target_psnr is not None or target_bpppb is not None):
        point = choose_qp(samples, params, peak, target_psnr, target_bpppb, progress)
        params, sample_psnr = replace(params, qp=point.qp, klt=point.klt), point.psnr
    return VideoPlan(bands, others, records, chunks, params, peak, sample_psnr, nodata)


def coded_stack(ds: xr.Dataset, plan: VideoPlan) -> tuple[xr.Dataset, xr.DataArray]:
    """``ds`` with its bands masked as coded (NaN where missing, :func:`masked_band`) and those bands stacked
    along ``band``: ``(band, time, y, x)`` (lazily)."""
    coded = ds.assign({b: masked_band(ds[b], plan.records[b], plan.nodata) for b in plan.bands})
    stack = xr.concat([coded[b] for b in plan.bands], dim="band").assign_coords(band=plan.bands)
    return coded, stack.transpose("band", *CUBE_DIMS)


def video_dataset(ds: xr.Dataset, plan: VideoPlan) -> tuple[xr.Dataset, dict]:
    """The dataset a compressed store holds for the cube ``ds`` and its Zarr encoding: the bands stacked in one
    video-coded variable, the other cube variables coded lossless, everything else as it is (lazily)."""
    bands, others, chunks = plan.bands, plan.others, plan.chunks
    ds = ds.drop_vars([n for n, v in ds.data_vars.items() if set(v.dims) == set(CUBE_DIMS) and n not in bands + others])
    _, stack = coded_stack(ds, plan)
    lossless = CodecParams(mode="lossless", threads=plan.params.threads)
    out_ds = ds.drop_vars(bands).assign(
        {STACKED: stack.chunk(dict(zip(("band", *CUBE_DIMS), (len(bands), *chunks), strict=True)))}
    )
    out_ds[STACKED].attrs = {
        "long_name": "stacked bands",
        "bands": bands,
        "band_attrs": json.dumps({b: ds[b].attrs for b in bands}, default=_json_scalar),
        BAND_DTYPES_ATTR: json.dumps(plan.records),
    }
    encoding: dict[str, dict[str, Any]] = {
        STACKED: {"serializer": VideoCodec(params=plan.params), "compressors": None, "chunks": (len(bands), *chunks)}
    }
    for name in others:
        out_ds[name] = out_ds[name].chunk(dict(zip(CUBE_DIMS, chunks, strict=True)))
        out_ds[name].attrs = {**ds[name].attrs, INPUT_DTYPE_ATTR: json.dumps(band_record(ds[name], plan.nodata))}
        encoding[name] = {"serializer": VideoCodec(params=lossless), "compressors": None, "chunks": chunks}
    for series in set(out_ds.data_vars) - {STACKED, *others}:
        if "time" in out_ds[series].dims:  # e.g. a weather series on (time,): Zarr chunks aligned to the time slabs
            out_ds[series] = out_ds[series].chunk({d: chunks[0] if d == "time" else -1 for d in out_ds[series].dims})
    for variable in out_ds.variables:
        out_ds[variable].encoding = {}
    out_ds.attrs = {k: v for k, v in ds.attrs.items() if k != INPUT_LAYOUT_ATTR}
    out_ds.attrs["eocube_compression"] = json.dumps(
        {
            "codec": VideoCodec(params=plan.params).to_dict(),
            "bands": bands,
            "lossless": others,
            **json.loads(ds.attrs.get(INPUT_LAYOUT_ATTR, "{}")),
        }
    )
    return out_ds, encoding


def compress_cube(
    cube: xr.Dataset | xr.DataArray | str | Path,
    out: str | Path,
    params: CodecParams = CodecParams(),
    target_psnr: float | None = None,
    target_bpppb: float | None = None,
    time_chunk: int = 32,
    space_chunk: int = 256,
    n_sample_chunks: int = 8,
    measure: bool = True,
    bands: list[str] | None = None,
    lossless: list[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    quicklook: str | Path | None = None,
    auto_value_range: bool = False,
    overwrite: bool = False,
) -> CompressionSummary:
    """Write ``cube`` to the Zarr v3 store ``out`` with the video codec; return a summary.

    ``bands`` / ``lossless`` name the video-coded and the losslessly coded variables (default:
    :func:`select_variables`); with both given, other variables on (time, y, x) are left out.
    In lossy mode the band values must lie in ``params.value_range`` (their unit: reflectance
    0..1 by default, or e.g. 0..10000 for digital numbers); a range most values fall outside is
    refused with a suggestion (:func:`check_value_range`); with ``auto_value_range`` that suggestion
    is used instead (:func:`usual_range_covering` of the sample chunks: one fixed range for the whole
    cube, e.g. 0..20000 for Sentinel-2 DN with clouds; it is in the summary). The store is
    written under a temporary name and moved to ``out`` when complete; ``progress(stage, done,
    total)`` is called after each time chunk written. ``quicklook``: path of a PNG comparing the
    original and decoded true colour and showing the error (lossy mode; :mod:`.quicklook`).
    An existing eocube store at ``out`` is replaced only with ``overwrite``.

    Each band's input dtype and fill value are recorded (:func:`band_record`) and given back by
    :func:`open_compressed`: uint16 DN with fill 0 come back as uint16 with 0 exactly where data is missing.

    With ``target_psnr`` (dB at peak = width of ``params.value_range``, after ``auto_value_range`` chose
    it; the summary's ``psnr_peak``) or ``target_bpppb`` the QP is chosen by rate control on
    ``n_sample_chunks`` sample chunks; otherwise ``params.qp`` is used. With ``measure`` the store is
    read back and the whole-cube PSNR reported (lossy mode, at the same peak). A PSNR target the sample
    chunks met but the whole cube misses is met by rewriting a quarter QP finer at a time; a bpppb target
    the whole cube misses by more than :data:`RATE_TOLERANCE` either way is corrected by rewriting at
    the QP the measured whole-cube rates point to (:func:`next_rate_qp`).
    """
    t0 = timer.perf_counter()
    check_not_own_input(cube, out)
    ds = as_dataset(cube)
    plan = plan_video(
        ds,
        params,
        target_psnr,
        target_bpppb,
        time_chunk,
        space_chunk,
        n_sample_chunks,
        bands,
        lossless,
        auto_value_range,
        progress,
    )
    bands, others, records, chunks, params = plan.bands, plan.others, plan.records, plan.chunks, plan.params
    ds = ds.drop_vars([n for n, v in ds.data_vars.items() if set(v.dims) == set(CUBE_DIMS) and n not in bands + others])
    coded, stack = coded_stack(ds, plan)
    sample_psnr, peak = plan.sample_psnr, plan.peak
    measured = measure and params.mode == "lossy"
    n_samples = int(np.prod(stack.shape))

    def write(at: CodecParams, replace_out: bool) -> int:
        stage = f"video, QP {at.qp:g}" if at.mode == "lossy" else "video, lossless"
        report = (lambda done, total: progress(stage, done, total)) if progress else None
        return _write_store(ds, replace(plan, params=at), out, report, replace_out)

    stored = write(params, overwrite)
    if target_bpppb is not None and params.mode == "lossy":
        params, stored = _meet_rate(write, params, stored, n_samples, target_bpppb, chunks[0])
    while True:  # the PSNR of the bands as open_compressed gives them back
        full_psnr = None
        if measured:
            full_psnr = whole_cube_psnr(stack, restored_stack(xr.open_zarr(out)[STACKED], records), peak)
        if target_psnr is None or full_psnr is None or full_psnr >= target_psnr or params.qp <= QP_MIN:
            break
        params = replace(params, qp=corrected_qp(params.qp, finer=True))  # the cube misses a PSNR its samples met
        stored = write(params, True)
    drawn = (
        write_comparison(coded, open_compressed(out, original_dims=False, restore=False), bands, quicklook, peak)
        if quicklook is not None and params.mode == "lossy"
        else None
    )
    return CompressionSummary(
        store=str(out),
        mode=params.mode,
        qp=params.qp if params.mode == "lossy" else None,
        klt=params.klt if params.mode == "lossy" else None,
        bands=bands,
        lossless_variables=others,
        stored_bytes=stored,
        raw_bytes=input_bytes(stack, records),
        bpppb=8.0 * stored / n_samples,
        sample_psnr=sample_psnr,
        psnr=full_psnr,
        psnr_peak=peak,
        seconds=round(timer.perf_counter() - t0, 2),
        quicklook=str(drawn) if drawn is not None else None,
        value_range=(params.value_range[0], params.value_range[1]) if params.mode == "lossy" else None,
        target_psnr=target_psnr,
        target_bpppb=target_bpppb,
    )


#: a whole-cube rate within this share of a bpppb target meets it: ``(1 - RATE_TOLERANCE) * target`` up to
#: the target is aimed at, up to ``(1 + RATE_TOLERANCE) * target`` is kept where nothing under it came closer
RATE_TOLERANCE = 0.02
#: most rewrites of the whole cube that correct its rate after the first write (each one a full encode)
MAX_RATE_REWRITES = 6
#: rate ratio of one QP step assumed until two writes on the same side of the target measure it
#: (typical of one QP step in :mod:`pipeline.compression.ratecontrol`'s searches on real data)
RATE_PER_QP = 1.12
#: QPs of the rate correction are multiples of this at the finest: a tail share of one frame in a 32-frame GOP
QP_RESOLUTION = 1 / 32


def rate_resolution(keyint: int, frames: int) -> float:
    """The QP step the rate correction moves in: one frame of a GOP's tail (``keyint`` frames, or all ``frames``
    of a shorter chunk), not finer than :data:`QP_RESOLUTION`; QPs closer than that code the same streams."""
    return max(QP_RESOLUTION, 1 / max(1, min(keyint, frames)))


def next_rate_qp(writes: list[tuple[float, float]], target: float, resolution: float = QP_RESOLUTION) -> float | None:
    """The QP to rewrite the cube at for ``target`` bpppb after the ``(qp, bpppb)`` writes so far; None to stop.

    Stops once a write lies in ``[(1 - RATE_TOLERANCE) * target, target]``. Otherwise the next QP aims at the
    middle of that band with the rate's logarithm taken as linear in QP: a secant between the nearest
    writes on either side of the band (kept inside that bracket, so it narrows every time), or, with writes
    on one side only, a step from the nearest one along the slope its neighbour on that side measures
    (else :data:`RATE_PER_QP`). QPs are multiples of ``resolution`` (:func:`rate_resolution`). Stops where the
    bracket holds no untried one or the step would leave QP_MIN..QP_MAX.
    """
    low = (1 - RATE_TOLERANCE) * target
    if any(low <= rate <= target for _, rate in writes):
        return None
    aim = (1 - RATE_TOLERANCE / 2) * target
    over = sorted((q, r) for q, r in writes if r > target)  # QPs too fine: rate above the band
    under = sorted((q, r) for q, r in writes if r < low)  # too coarse
    if over and under:
        (q0, r0), (q1, r1) = over[-1], under[0]
        if r0 <= r1:  # not monotone (noise between close QPs): halve the bracket
            qp = (q0 + q1) / 2
        else:
            qp = q0 + (q1 - q0) * math.log(r0 / aim) / math.log(r0 / r1)
        lo, hi = q0 + resolution, q1 - resolution
    else:
        side = over if over else under
        q, r = side[-1] if over else side[0]
        slope = math.log(RATE_PER_QP)
        if len(side) > 1:
            (qa, ra), (qb, rb) = side[-2:] if over else side[:2]
            measured = math.log(ra / rb) / (qb - qa)
            slope = measured if measured > 0 else slope
        qp = q + math.log(r / aim) / slope
        lo, hi = QP_MIN, QP_MAX
    qp = min(max(round(qp / resolution) * resolution, lo), hi)
    if lo > hi or any(abs(qp - q) < resolution / 2 for q, _ in writes):
        return None
    return float(qp)


def best_rate_write(writes: list[tuple[float, float]], target: float) -> tuple[float, float]:
    """The ``(qp, bpppb)`` write to keep for ``target``: the highest rate in ``[(1 - RATE_TOLERANCE) * target,
    target]``, else the lowest in ``(target, (1 + RATE_TOLERANCE) * target]``, else the highest at most
    ``target``, else the lowest."""
    within = [w for w in writes if (1 - RATE_TOLERANCE) * target <= w[1] <= target]
    above = [w for w in writes if target < w[1] <= (1 + RATE_TOLERANCE) * target]
    below = [w for w in writes if w[1] <= target]
    if within or (not above and below):
        return max(within or below, key=lambda w: w[1])
    return min(above or writes, key=lambda w: w[1])


def _meet_rate(
    write: Callable[[CodecParams, bool], int],
    params: CodecParams,
    stored: int,
    n_samples: int,
    target: float,
    frames: int,
) -> tuple[CodecParams, int]:
    """Rewrite the cube (written at ``params``, ``stored`` bytes) until its rate meets ``target`` bpppb
    (:func:`next_rate_qp`, at most :data:`MAX_RATE_REWRITES` times), leaving the :func:`best_rate_write` in
    the store; its params and bytes. The sample chunks' rate is not the cube's: chunks they left out, and
    each chunk's own header and keyframe, move it. ``frames``: the frames of a time chunk."""
    writes = [(params.qp, 8.0 * stored / n_samples)]
    resolution = rate_resolution(params.keyint, frames)
    for _ in range(MAX_RATE_REWRITES):
        qp = next_rate_qp(writes, target, resolution)
        if qp is None:
            break
        params = replace(params, qp=qp)
        stored = write(params, True)
        writes.append((qp, 8.0 * stored / n_samples))
    best = best_rate_write(writes, target)[0]
    if best != params.qp:  # an earlier write was the better one: written again (the encoder is deterministic)
        params = replace(params, qp=best)
        stored = write(params, True)
    return params, stored


#: QP step of the whole-cube correction (a quarter QP)
CORRECTION_STEP = 0.25


def corrected_qp(qp: float, finer: bool) -> float:
    """``qp`` one :data:`CORRECTION_STEP` finer or coarser, within QP_MIN..QP_MAX."""
    moved = qp - CORRECTION_STEP if finer else qp + CORRECTION_STEP
    return float(min(max(moved, QP_MIN), QP_MAX))


def whole_cube_psnr(reference: xr.DataArray, decoded: xr.DataArray, peak: float) -> float:
    """PSNR (dB) of ``decoded`` against ``reference`` over samples valid in both, chunk by chunk with Dask.

    Memory stays at a few chunks however large the cube; the MSE is pooled as in
    :func:`pipeline.compression.metrics.psnr`.
    """
    import dask.array as da

    test = decoded.data if isinstance(decoded.data, da.Array) else da.from_array(decoded.data)
    ref = da.asarray(reference.data).rechunk(test.chunks)
    diff = ref.astype(np.float64) - test.astype(np.float64)
    ok = ~da.isnan(diff)
    sse, n = da.compute(da.where(ok, diff * diff, 0.0).sum(), ok.sum())
    if n == 0:
        raise ValueError("no valid samples to compare")
    return float("inf") if sse == 0 else float(10 * np.log10(peak * peak * n / sse))


def input_bytes(stack: xr.DataArray, records: dict[str, dict]) -> int:
    """Bytes of the stacked bands in their input dtypes (uint16 DN: 2 a sample, though coded as float32)."""
    per_band = int(np.prod(stack.shape[1:]))
    return sum(
        per_band * np.dtype(records[b].get("packing", records[b])["dtype"]).itemsize
        for b in stack["band"].values.tolist()
    )


def restored_stack(decoded: xr.DataArray, records: dict[str, dict]) -> xr.DataArray:
    """The stacked ``decoded`` bands as :func:`open_compressed` gives them back (:func:`restored_band`)."""
    return xr.concat(
        [restored_band(decoded.sel(band=b), records.get(b)) for b in decoded["band"].values.tolist()], dim="band"
    )


def _write_store(
    ds: xr.Dataset,
    plan: VideoPlan,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> int:
    """Write :func:`video_dataset` of ``ds`` to ``out`` (replacing an eocube store there only with ``overwrite``);
    bytes of the video chunks."""
    out_ds, encoding = video_dataset(ds, plan)
    with atomic_store(out, overwrite) as tmp:  # a failed write leaves no store, or the previous one, under ``out``
        write_in_time_slabs(
            vlen_text_coords(out_ds), tmp, encoding, time_slabs(out_ds.sizes["time"], plan.chunks[0], 1), progress
        )
        consolidate(tmp)
    return sum(f.stat().st_size for f in Path(out, STACKED).rglob("*") if f.is_file() and f.name != "zarr.json")


def open_compressed(
    store: str | Path, split: bool = True, original_dims: bool = True, restore: bool = True
) -> xr.Dataset:
    """Open a compressed store lazily; with ``split`` one variable per band as in the cube convention.

    With ``split`` and ``restore`` each band comes back in its input dtype with its fill value where data is
    missing (uint16 DN with fill 0 as uint16, 0 exactly where missing: :func:`split_bands`); float bands,
    ``restore=False`` and the stacked variable (``split=False``) hold the decoded values, NaN where missing.

    Splitting decodes a chunk once per band that is read; keep ``split=False`` and select
    from the stacked variable to decode each chunk once. With ``original_dims``, dims the stage
    renamed (``lat`` coded as ``y``, ...) get their input names back, variables their input dim
    order (``(time, x, y)`` say; the codec works on ``(time, y, x)``), and a single image loses the
    time dim of length 1 it was coded with.
    """
    ds = xr.open_zarr(store, decode_coords="all")
    ds = split_bands(ds, restore) if split else ds
    if not original_dims:
        return ds
    record = json.loads(ds.attrs.get("eocube_compression", "{}"))
    if "time" in record.get("added_dims", []):
        ds = ds.isel(time=0, drop=True)
    renamed = record.get("renamed_dims", {})
    ds = ds.rename({d: a for a, d in renamed.items()}) if renamed else ds
    for name, dims in record.get("dim_order", {}).items():
        if name in ds.data_vars and set(ds[name].dims) == set(dims):
            ds[name] = ds[name].transpose(*dims)
    return ds


def _json_scalar(value: object) -> object:
    """JSON form of a numpy scalar or array in a variable's attributes."""
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else str(value)


def summary_dict(summary: CompressionSummary) -> dict:
    """Summary as a JSON-ready dict."""
    return asdict(summary)
