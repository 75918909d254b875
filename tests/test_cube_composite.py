"""Temporal composites against independent references: numpy per bin, hand-made cases with
known answers, and the geometric median against a brute-force minimisation (scipy)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.optimize import minimize

from pipeline.cube.compositing import bins, composite

BANDS = ("red", "nir08", "swir16")


def synthetic_cube(
    times: list[str],
    ny: int = 6,
    nx: int = 5,
    clear: float = 0.7,
    seed: int = 0,
    values: dict[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """A dask-backed cube with random (or given) reflectance, NaN where a random mask says cloudy."""
    rng = np.random.default_rng(seed)
    t = pd.DatetimeIndex(times).values
    valid = rng.random((len(t), ny, nx)) < clear
    values = values or {b: rng.random((len(t), ny, nx)) for b in BANDS}
    data = {b: (("time", "y", "x"), np.where(valid, values[b], np.nan).astype(np.float32)) for b in BANDS}
    data["valid"] = (("time", "y", "x"), valid)
    cube = xr.Dataset(
        data,
        coords={
            "time": t,
            "y": np.arange(ny) * -10.0,
            "x": np.arange(nx) * 10.0,
            "sensor": ("time", np.array(["sentinel-2"] * len(t), dtype=object)),
        },
    )
    return cube.chunk({"time": 1, "y": 3, "x": 5})


TIMES = ["2022-01-03", "2022-01-09", "2022-01-20", "2022-01-28", "2022-03-02", "2022-03-15", "2022-03-30"]


@pytest.mark.parametrize("method,reference", [("median", np.nanmedian), ("mean", np.nanmean)])
def test_median_and_mean_equal_numpy_per_month(method, reference):
    cube = synthetic_cube(TIMES)
    out = composite(cube, "1MS", method).compute()
    assert list(pd.DatetimeIndex(out.time.values).strftime("%Y-%m-%d")) == ["2022-01-01", "2022-02-01", "2022-03-01"]
    assert list(out["observations"].values) == [4, 0, 3]
    assert list(pd.DatetimeIndex(out["time_end"].values).strftime("%m-%d")) == ["02-01", "03-01", "04-01"]
    for b in BANDS:
        assert out[b].dtype == np.float32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            jan = reference(cube[b].values[:4], axis=0)
            mar = reference(cube[b].values[4:], axis=0)
        np.testing.assert_allclose(out[b].values[0], jan, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(out[b].values[2], mar, rtol=1e-6, equal_nan=True)
        assert np.isnan(out[b].values[1]).all(), "an empty bin is all NaN"


def test_gap_statistics():
    cube = synthetic_cube(TIMES, clear=0.5, seed=3)
    out = composite(cube, "1MS", "count").compute()
    valid = cube["valid"].values
    assert set(out.data_vars) == {"clear_count", "valid_fraction", "valid", "bin_valid_fraction"}
    assert out["clear_count"].dtype == np.uint16
    np.testing.assert_array_equal(out["clear_count"].values[0], valid[:4].sum(0))
    np.testing.assert_array_equal(out["clear_count"].values[2], valid[4:].sum(0))
    np.testing.assert_allclose(out["valid_fraction"].values[0], valid[:4].mean(0), rtol=1e-6)
    assert np.isnan(out["valid_fraction"].values[1]).all() and out["clear_count"].values[1].sum() == 0
    np.testing.assert_allclose(
        out["bin_valid_fraction"].values[[0, 2]], [valid[:4].mean(), valid[4:].mean()], rtol=1e-6
    )
    np.testing.assert_array_equal(out["valid"].values, out["clear_count"].values > 0)
    assert json.loads(out.attrs["eocube:composite"]) == {"freq": "1MS", "method": "count"}


def test_best_pixel_takes_every_band_from_the_least_cloudy_clear_date():
    cube = synthetic_cube(TIMES[:4], clear=0.6, seed=5)
    cover = np.array([50.0, 10.0, 80.0, 30.0], np.float32)  # date 1 is the least cloudy, then 3, 0, 2
    cube = cube.assign_coords(cloud_cover=("time", cover))
    out = composite(cube, "1MS", "best").compute()
    valid = cube["valid"].values
    order = np.argsort(cover)
    expected_t = np.full(valid.shape[1:], -1)
    for t in order[::-1]:  # the best clear date overwrites the worse ones
        expected_t[valid[t]] = t
    for b in BANDS:
        values = cube[b].values
        expected = np.where(expected_t >= 0, np.take_along_axis(values, np.maximum(expected_t, 0)[None], 0)[0], np.nan)
        np.testing.assert_array_equal(out[b].values[0], expected)
    # an explicit per-pixel score wins over cloud cover
    score = xr.DataArray(np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 6, 5)), dims=("time", "y", "x"))
    latest = composite(cube, "1MS", "best", score=score).compute()
    last_clear = np.where(valid.any(0), 3 - np.argmax(valid[::-1], axis=0), -1)
    expected = np.where(
        last_clear >= 0, np.take_along_axis(cube["red"].values, np.maximum(last_clear, 0)[None], 0)[0], np.nan
    )
    np.testing.assert_array_equal(latest["red"].values[0], expected)


def _brute_force_geomedian(points: np.ndarray) -> np.ndarray:
    """argmin_m sum_i ||x_i - m|| by Nelder-Mead from the coordinate-wise median (independent of Weiszfeld)."""
    cost = lambda m: np.linalg.norm(points - m, axis=1).sum()  # noqa: E731
    res = minimize(
        cost,
        np.median(points, axis=0),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000},
    )
    return res.x


def test_geomedian_against_brute_force_minimisation():
    cube = synthetic_cube(TIMES[:4] + ["2022-01-30", "2022-01-31"], clear=0.8, seed=11)
    out = composite(cube, "1MS", "geomedian").compute()
    stack = np.stack([cube[b].values for b in BANDS], axis=-1)  # time, y, x, band
    checked = 0
    for y in range(stack.shape[1]):
        for x in range(stack.shape[2]):
            pts = stack[:, y, x][cube["valid"].values[:, y, x]].astype(np.float64)
            got = np.array([out[b].values[0, y, x] for b in BANDS])
            if len(pts) == 0:
                assert np.isnan(got).all()
                continue
            ref = _brute_force_geomedian(pts)

            def cost(m, pts=pts):
                return np.linalg.norm(pts - m, axis=1).sum()

            assert cost(got) <= cost(ref) + 1e-4, (y, x, got, ref)
            np.testing.assert_allclose(got, ref, atol=2e-3)
            checked += 1
    assert checked > 20


def test_geomedian_closed_form_cases():
    """Collinear points: the median point; an equilateral triangle: its centroid (Fermat point)."""
    pts = {0: [0.1, 0.1, 0.1], 1: [0.2, 0.2, 0.2], 2: [0.9, 0.9, 0.9]}
    h = np.sqrt(3) / 2 * 0.4
    tri = {0: [0.1, 0.1, 0.5], 1: [0.5, 0.1, 0.5], 2: [0.3, 0.1 + h, 0.5]}
    values = {b: np.array([[[pts[t][i], tri[t][i]]] for t in range(3)]) for i, b in enumerate(BANDS)}
    cube = synthetic_cube(TIMES[:3], ny=1, nx=2, clear=1.0, values=values)
    out = composite(cube, "1MS", "geomedian").compute()
    got = np.stack([out[b].values[0, 0] for b in BANDS], axis=-1)
    np.testing.assert_allclose(got[0], [0.2, 0.2, 0.2], atol=1e-4)
    np.testing.assert_allclose(got[1], [0.3, 0.1 + h / 3, 0.5], atol=1e-4)


def test_bins_of_the_supported_frequencies():
    times = pd.DatetimeIndex(["2021-12-05", "2022-02-27", "2022-03-01", "2022-05-31", "2022-06-01"]).values
    starts, ends, index = bins(times, "QS-DEC")  # meteorological seasons DJF, MAM, JJA
    assert list(starts.strftime("%Y-%m-%d")) == ["2021-12-01", "2022-03-01", "2022-06-01"]
    assert list(index) == [0, 0, 1, 1, 2] and ends[-1] == pd.Timestamp("2022-09-01")
    starts, _, index = bins(times[:2], "10D")
    assert starts[0] == pd.Timestamp("2021-12-05") and (starts[1] - starts[0]).days == 10
    assert index[-1] == (pd.Timestamp("2022-02-27") - pd.Timestamp("2021-12-05")).days // 10


@pytest.mark.parametrize(
    "freq,method,message",
    [
        ("1ME", "median", "not start-anchored"),
        ("fortnightly", "median", "composite frequency 'fortnightly' is not usable"),
        ("0D", "median", "must step forward in time"),
        ("-10D", "median", "must step forward in time"),
        ("6h", "median", "shorter than a day"),
        ("1M", "median", "an alias pandas is removing"),
        ("1MS", "mode", "unknown composite method"),
    ],
)
def test_bad_composite_arguments_name_the_problem(freq, method, message):
    with pytest.raises(ValueError, match=message):
        composite(synthetic_cube(TIMES), freq, method)
