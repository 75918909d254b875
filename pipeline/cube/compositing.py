"""Temporal composites of a cube into regular time bins, with gap statistics.

``composite(cube, freq, method)`` groups the cube's time steps into bins of a
start-anchored pandas frequency (``"10D"``, ``"1MS"``, ``"QS-DEC"``, ``"YS"``...; every bin
in the covered range is kept, empty ones as all-NaN) and reduces each reflectance band
over the clear observations (NaN in the input = masked) of each bin:

* ``median`` / ``mean``: per band, per pixel (NaN-skipping);
* ``best``: per pixel the observation of highest score wins, all bands from that one
  date. The default score is least cloud: ``100 - cloud_cover`` (item ``eo:cloud_cover``,
  the ``cloud_cover`` coordinate of :func:`pipeline.cube.load.load_sensor`), else the scene's
  clear fraction;
* ``geomedian``: the geometric median across bands (the point minimising the sum of
  Euclidean distances to the pixel's clear observations), computed by geomad's
  Weiszfeld-type solver (the implementation used by odc-algo);
* ``count``: no reflectance, only the gap statistics below.

Every method adds ``clear_count`` (uint16, time/y/x: clear observations in the bin),
``valid_fraction`` (float32, time/y/x: clear_count / observations; NaN in empty bins),
``bin_valid_fraction`` (float32, time: the bin's clear share over all pixels and
observations) and ``valid`` (composite has a value). Coordinates: ``time`` = bin start,
``time_end`` = next bin start (exclusive), ``observations`` (time steps in the bin),
``sensor`` (the sensors contributing, ``+``-joined). Everything stays lazy (Dask).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

Method = Literal["median", "mean", "best", "count", "geomedian"]
METHODS: tuple[Method, ...] = ("median", "mean", "best", "count", "geomedian")


def as_method(name: str) -> Method:
    """``name`` (e.g. a command-line string) as a composite :data:`Method`; a ValueError naming the choices otherwise."""
    for method in METHODS:
        if name == method:
            return method
    raise ValueError(f"unknown composite method {name!r}; choose one of {list(METHODS)}")


def composite_offset(freq: str) -> pd.DateOffset:
    """The pandas offset of a composite frequency: start-anchored, positive, a day or longer; else one
    ``ValueError`` line (pandas' deprecation warnings, e.g. for ``"1M"``, become that line too)."""
    hint = "use e.g. '10D', '1MS', 'QS-DEC'"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError, FutureWarning, DeprecationWarning) as exc:
        deprecated = isinstance(exc, (FutureWarning, DeprecationWarning))
        reason = "an alias pandas is removing" if deprecated else str(exc).split("\n")[0]
        raise ValueError(f"composite frequency {freq!r} is not usable ({reason}); {hint}") from None
    if type(offset).__name__.endswith("End"):  # MonthEnd, QuarterEnd, YearEnd, BusinessMonthEnd...
        raise ValueError(f"composite frequency {freq!r} is not start-anchored (use e.g. '1MS', not '1ME')")
    if offset.n <= 0:
        raise ValueError(f"composite frequency {freq!r} must step forward in time; {hint}")
    probe = pd.Timestamp("2001-01-01")
    if probe + offset - probe < pd.Timedelta(days=1):
        raise ValueError(f"composite frequency {freq!r} is shorter than a day; {hint}")
    return offset


def bins(times: np.ndarray, freq: str) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray]:
    """``(starts, ends, index)``: bin edges covering ``times`` and the bin of each time step.

    Raises ``ValueError`` for an unknown or end-anchored frequency (e.g. ``"ME"``).
    """
    offset = composite_offset(freq)
    if len(times) == 0:
        raise ValueError("cannot composite a cube without time steps")
    t = pd.DatetimeIndex(times)
    starts = pd.Series(0, index=t).resample(offset, closed="left", label="left").count().index
    ends = starts[1:].append(pd.DatetimeIndex([starts[-1] + offset]))
    index = np.searchsorted(starts.values, t.values, side="right") - 1
    return starts, ends, index


def reflectance_vars(cube: xr.Dataset) -> list[str]:
    """Float ``(time, y, x)`` variables of the cube (its reflectance bands)."""
    return [
        str(v)
        for v, a in cube.data_vars.items()
        if set(a.dims) == {"time", "y", "x"} and np.issubdtype(a.dtype, np.floating)
    ]


def _quiet(func):
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, as intended
            return func(*args, **kwargs)

    return run


def _over_time(arr: xr.DataArray, func) -> xr.DataArray:
    return xr.apply_ufunc(
        _quiet(func),
        arr,
        input_core_dims=[["time"]],
        kwargs={"axis": -1},
        dask="parallelized",
        output_dtypes=[np.float32],
    ).astype(np.float32)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def _geomedian_block(yxbt: np.ndarray) -> np.ndarray:
    from geomad import nangeomedian_pcm

    return nangeomedian_pcm(np.ascontiguousarray(yxbt, dtype=np.float32), eps=1e-6, maxiters=1000, num_threads=1)


def default_score(cube: xr.Dataset) -> xr.DataArray:
    """Least cloud: ``100 - cloud_cover`` (%) where items state it, else the scene's clear share (x100)."""
    clear_share = cube["valid"].mean(("y", "x")) * 100.0
    if "cloud_cover" in cube.coords:
        cover = cube["cloud_cover"].astype(np.float64)
        return xr.where(np.isfinite(cover), 100.0 - cover, clear_share)
    return clear_share


def _reduce(sub: xr.Dataset, bands: Sequence[str], method: str, score: xr.DataArray | None) -> dict[str, xr.DataArray]:
    if method in ("median", "mean"):
        func = np.nanmedian if method == "median" else np.nanmean
        return {b: _over_time(sub[b], func) for b in bands}
    if method == "best":
        if score is None:
            raise ValueError("the 'best' composite needs a score (composite() defaults it to default_score)")
        rank = xr.where(sub["valid"], score.astype(np.float64), -np.inf).argmax("time")
        return {
            b: xr.apply_ufunc(
                _take, sub[b], rank, input_core_dims=[["time"], []], dask="parallelized", output_dtypes=[np.float32]
            )
            for b in bands
        }
    if method == "geomedian":
        yxbt = sub[list(bands)].to_array("band").transpose("y", "x", "band", "time").chunk({"band": -1})
        gm = xr.apply_ufunc(
            _geomedian_block,
            yxbt,
            input_core_dims=[["band", "time"]],
            output_core_dims=[["band"]],
            dask="parallelized",
            output_dtypes=[np.float32],
        )
        return {b: gm.sel(band=b, drop=True) for b in bands}
    return {}


def _bin(
    cube: xr.Dataset, positions: np.ndarray, bands: Sequence[str], method: str, score: xr.DataArray | None
) -> xr.Dataset:
    template = cube["valid"].isel(time=0, drop=True).reset_coords(drop=True)
    if len(positions) == 0:
        nan = xr.full_like(template, np.nan, dtype=np.float32)
        out = {b: nan for b in bands}
        out["clear_count"] = xr.zeros_like(template, dtype=np.uint16)
        out["valid_fraction"] = nan
        out["valid"] = xr.zeros_like(template, dtype=bool)
        out["bin_valid_fraction"] = xr.DataArray(np.float32(np.nan))
        return xr.Dataset(out)
    sub = cube[[*bands, "valid"]].isel(time=positions).reset_coords(drop=True).chunk({"time": -1})
    sub_score = score.isel(time=positions).reset_coords(drop=True) if score is not None else None
    out = _reduce(sub, bands, method, sub_score)
    count = sub["valid"].sum("time").astype(np.uint16)
    out["clear_count"] = count
    out["valid_fraction"] = (count / np.float32(len(positions))).astype(np.float32)
    out["valid"] = count > 0
    out["bin_valid_fraction"] = (count.mean(("y", "x")) / np.float32(len(positions))).astype(np.float32)
    return xr.Dataset(out)


def composite(
    cube: xr.Dataset, freq: str = "1MS", method: Method = "median", score: xr.DataArray | None = None
) -> xr.Dataset:
    """Composite ``cube`` (dims ``time, y, x``; NaN = masked; a ``valid`` variable) into bins of ``freq``.

    ``score`` (``best`` only) ranks observations, higher wins: a DataArray along ``time``
    or ``(time, y, x)``; default :func:`default_score`. See the module doc for outputs.
    """
    method = as_method(method)
    if "valid" not in cube:
        raise ValueError("the cube has no 'valid' variable; composite needs the clear-pixel mask")
    bands = [] if method == "count" else reflectance_vars(cube)
    if method == "best" and score is None:
        score = default_score(cube)
    starts, ends, index = bins(cube.time.values, freq)
    parts = [_bin(cube, np.flatnonzero(index == k), bands, method, score) for k in range(len(starts))]
    out = xr.concat(parts, dim=pd.Index(starts.values, name="time"), combine_attrs="drop")
    sensors = cube["sensor"].values if "sensor" in cube.coords else np.array([""] * cube.sizes["time"], dtype=object)
    labels = ["+".join(sorted({str(s) for s in sensors[index == k]})) for k in range(len(starts))]
    out = out.assign_coords(
        time_end=("time", ends.values),
        observations=("time", np.bincount(index, minlength=len(starts)).astype(np.int32)),
        sensor=("time", np.array(labels, dtype=object)),
    )
    for name in ("x", "y", "spatial_ref"):
        if name in cube.coords:
            out = out.assign_coords({name: cube.coords[name]})
    out.attrs.update(cube.attrs, **{"eocube:composite": json.dumps({"freq": freq, "method": method})})
    return out
