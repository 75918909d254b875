"""Compression returns what it was given: values at the coarsest QP, dtype and fill values, the PSNR's
peak, and the rate a target asks for."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import typer
import xarray as xr
import zarr
from typer.testing import CliRunner

from pipeline.cli.compress import app
from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.metrics import psnr
from pipeline.compression.ratecontrol import choose_qp
from pipeline.compression.stage import (
    BAND_DTYPES_ATTR,
    QP_RESOLUTION,
    RATE_TOLERANCE,
    STACKED,
    best_rate_write,
    compress_cube,
    next_rate_qp,
    open_compressed,
)
from pipeline.compression.video import QP_MAX, QP_MIN
from pipeline.store.open import open_cube
from pipeline.store.zarr_store import consolidate

BANDS = ["blue", "green", "red", "nir"]
ROMANIA = ("data", "sentinel2-romania", "sentinel2_cube_subset_romania_10m.nc")
#: Sentinel-2 SCL classes a cloud-masked product leaves out: cloud shadow, cloud (medium, high), thin cirrus
SCL_CLOUDS = (3, 8, 9, 10)


def textured_reflectance(t: int = 16, h: int = 48, w: int = 64, seed: int = 2) -> np.ndarray:
    """Correlated reflectance (band, time, y, x) in [0.02, 0.6] with smooth structure and fine noise, float32."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.25 + 0.1 * np.sin(xx / 7 + tt / 4) + 0.06 * np.cos(yy / 5 - tt / 6)
    cube = np.stack([base * (0.6 + 0.25 * k) + 0.02 * np.sin(k + yy / 9) for k in range(len(BANDS))])
    return np.clip(cube + rng.normal(0, 0.004, cube.shape), 0.02, 0.6).astype(np.float32)


def dn_cube(t: int = 16, h: int = 48, w: int = 64, fill_attr: str = "_FillValue") -> tuple[xr.Dataset, np.ndarray]:
    """uint16 DN bands with fill 0 (named by ``fill_attr``) where a cloud and a swath edge leave no data, beside
    dark water of 1-20 DN that lossy coding can round to 0; and the missing mask (band, time, y, x)."""
    dn = np.rint(textured_reflectance(t, h, w) * 10000).astype(np.uint16)
    dn[:, :, 30:40, 5:25] = np.random.default_rng(3).integers(1, 21, (len(BANDS), t, 10, 20))  # water
    missing = np.zeros(dn.shape, dtype=bool)
    missing[:, 3:6, 8:30, 20:50] = True  # a cloud on every band
    missing[:, :, :, :6] = True  # a swath edge
    missing[2, t - 7] = True  # a date one band lacks
    dn[missing] = 0
    coords = {
        "time": pd.date_range("2021-01-01", periods=t, freq="5D"),
        "y": 5_000_000 - 10.0 * np.arange(h),
        "x": 400_000 + 10.0 * np.arange(w),
    }
    ds = xr.Dataset(
        {b: (("time", "y", "x"), dn[k], {fill_attr: np.uint16(0), "units": "DN"}) for k, b in enumerate(BANDS)},
        coords=coords,
    )
    return ds, missing


def stacked(ds: xr.Dataset, names: list[str]) -> np.ndarray:
    return np.stack([ds[b].values for b in names])


def with_nan(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return np.where(missing, np.nan, values.astype(np.float64))


@pytest.fixture(scope="module")
def romania_path(shared_dir):
    path = shared_dir.joinpath(*ROMANIA)
    if not path.exists():
        pytest.skip(f"the real Sentinel-2 cube {path} is not in shared/")
    return path


# 1. the coarsest QP decodes to what was coded


@pytest.mark.parametrize("use_klt, scope", [(False, "auto"), (True, "chunk"), (True, "date")])
def test_the_coarsest_qp_decodes_close_to_the_chunk_means(use_klt, scope):
    """libx265 12-bit streams coded at x265 QP 50 or 51 decode to the mid code whatever was coded (means off
    by a third of the range): the coarsest QP allowed, and a fraction under it (whose GOP tails are coded at
    it), must decode to the chunk's means."""
    x = textured_reflectance()
    for qp in (QP_MAX, QP_MAX - 0.5):
        back = decode_array(encode_array(x, CodecParams(qp=qp, klt=use_klt, klt_scope=scope, preset="ultrafast")))
        assert abs(float(back.mean() - x.mean())) < 0.02, qp  # range 0..1
        assert np.abs(back.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))).max() < 0.05, qp
        assert psnr(x, back, 1.0) > 25, qp


def test_qps_coarser_than_the_ceiling_are_refused_and_rate_control_stays_under_it():
    for qp in (QP_MAX + 0.5, 50, 51):
        with pytest.raises(ValueError, match=rf"^qp {qp:g} must be in {QP_MIN}..{QP_MAX}\b[^\n]*$"):
            CodecParams(qp=qp)
    x = textured_reflectance(t=8)
    with pytest.raises(ValueError, match=rf"out of reach: at QP {QP_MAX} "):  # the coarsest QP tried is the ceiling
        choose_qp([x], CodecParams(preset="ultrafast"), 1.0, target_bpppb=1e-4)
    assert f"{QP_MIN} best .. {QP_MAX}" in _option_help("qp")


def test_a_store_written_at_a_qp_now_refused_still_opens(tmp_path):
    """A store from before the ceiling came down (its codec configuration says QP 51) opens and decodes."""
    ds, _ = dn_cube(t=8)
    compress_cube(ds, tmp_path / "c.zarr", CodecParams(qp=30, preset="ultrafast", value_range=(0, 10000)))
    meta_path = tmp_path / "c.zarr" / STACKED / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"][0]["configuration"]["qp"] = 51
    meta_path.write_text(json.dumps(meta))
    consolidate(tmp_path / "c.zarr")
    before = open_compressed(tmp_path / "c.zarr")["red"].values
    assert zarr.open_array(tmp_path / "c.zarr" / STACKED).metadata.codecs[0].params.qp == QP_MAX
    assert before.dtype == np.uint16 and before.shape == (8, 48, 64)


@pytest.mark.shared
def test_real_sentinel2_at_the_coarsest_qp_keeps_its_chunk_means(romania_path):
    """Every 32-date chunk of the real Romania cube, bands coded directly and through either KLT, at the
    coarsest QP: chunk means within 1 % of the 0..20000 DN range (QP 50 put one at 10,000 DN against 3,331)."""
    ds = xr.open_dataset(romania_path)
    dn = np.stack([ds[b].values for b in ["B2", "B3", "B4", "B8"]]).astype(np.float32)
    for use_klt, scope in [(False, "auto"), (True, "chunk"), (True, "date")]:
        params = CodecParams(qp=QP_MAX, value_range=(0, 20000), klt=use_klt, klt_scope=scope, preset="ultrafast")
        for t0 in range(0, dn.shape[1], 32):
            block = dn[:, t0 : t0 + 32]
            back = decode_array(encode_array(block, params))
            assert abs(float(np.nanmean(back) - np.nanmean(block))) < 200, (use_klt, scope, t0)
            assert psnr(block, back, 20000) > 25, (use_klt, scope, t0)


# 2. dtype and fill values come back


@pytest.mark.parametrize("fill_attr", ["_FillValue", "nodata"])
def test_uint16_with_fill_0_comes_back_uint16_with_0_exactly_where_missing(tmp_path, fill_attr):
    ds, missing = dn_cube(fill_attr=fill_attr)
    summary = compress_cube(ds, tmp_path / "c.zarr", CodecParams(qp=26, preset="ultrafast"), auto_value_range=True)
    assert summary.value_range == (0, 10000) and summary.raw_bytes == ds["red"].size * 2 * len(BANDS)
    for opened in (open_compressed(tmp_path / "c.zarr"), open_cube(tmp_path / "c.zarr")):
        back = stacked(opened, BANDS)
        assert all(opened[b].dtype == np.uint16 for b in BANDS)
        np.testing.assert_array_equal(back == 0, missing)  # dark water that decodes to 0 is moved to 1
        assert psnr(with_nan(stacked(ds, BANDS), missing), with_nan(back, missing), 10000) > 40
    raw = open_compressed(tmp_path / "c.zarr", restore=False)["red"]
    assert raw.dtype == np.float32 and np.array_equal(np.isnan(raw.values), missing[2])
    record = json.loads(xr.open_zarr(tmp_path / "c.zarr")[STACKED].attrs[BAND_DTYPES_ATTR])
    assert record == {b: {"dtype": "uint16", "fill": 0} for b in BANDS}


def test_uint16_netcdf_with_fill_0_and_lossless_mode_come_back_exactly(tmp_path):
    """A NetCDF xarray opens as float32 with NaN (its _FillValue 0 masked) is given back as the uint16 it
    holds; in lossless mode bit for bit, 0 where missing."""
    ds, missing = dn_cube()
    for b in BANDS:
        ds[b].attrs.pop("_FillValue")
    ds.to_netcdf(tmp_path / "dn.nc", encoding={b: {"_FillValue": 0, "dtype": "uint16"} for b in BANDS})
    assert xr.open_dataset(tmp_path / "dn.nc")["red"].dtype == np.float32  # as the stage reads it
    compress_cube(tmp_path / "dn.nc", tmp_path / "c.zarr", CodecParams(mode="lossless"))
    out = open_compressed(tmp_path / "c.zarr")
    assert all(out[b].dtype == np.uint16 for b in BANDS)
    np.testing.assert_array_equal(stacked(out, BANDS), stacked(ds, BANDS))
    assert out["red"].encoding["_FillValue"] == 0
    out[BANDS].to_netcdf(tmp_path / "again.nc")  # written back out, it keeps its fill convention
    np.testing.assert_array_equal(np.isnan(xr.open_dataset(tmp_path / "again.nc")["red"].values), missing[2])


def test_float32_with_nan_still_comes_back_float32_with_nan(tmp_path):
    x = textured_reflectance()
    x[:, 3:6, 8:30, 20:50] = np.nan
    ds = xr.Dataset(
        {b: (("time", "y", "x"), x[k]) for k, b in enumerate(BANDS)},
        coords={"time": pd.date_range("2021-01-01", periods=x.shape[1], freq="5D")},
    )
    compress_cube(ds, tmp_path / "c.zarr", CodecParams(qp=20, preset="ultrafast"))
    out = open_compressed(tmp_path / "c.zarr")
    assert all(out[b].dtype == np.float32 for b in BANDS)
    np.testing.assert_array_equal(np.isnan(stacked(out, BANDS)), np.isnan(x))
    assert psnr(x, stacked(out, BANDS), 1.0) > 40


def test_a_store_without_the_record_opens_as_before(tmp_path):
    ds, missing = dn_cube(t=8)
    compress_cube(ds, tmp_path / "c.zarr", CodecParams(qp=26, preset="ultrafast", value_range=(0, 10000)))
    array = zarr.open_array(tmp_path / "c.zarr" / STACKED, mode="r+")
    array.attrs.put({k: v for k, v in array.attrs.asdict().items() if k != BAND_DTYPES_ATTR})
    consolidate(tmp_path / "c.zarr")
    out = open_compressed(tmp_path / "c.zarr")
    assert out["red"].dtype == np.float32 and np.array_equal(np.isnan(out["red"].values), missing[2])


@pytest.mark.shared
def test_real_sentinel2_uint16_with_fill_0_round_trips(romania_path, tmp_path):
    """The real Romania cube with its clouds and shadows (SCL) set to the fill 0, as a cloud-masked product
    stores them: through the CLI it comes back uint16, 0 exactly at those pixels, and SCL exact."""
    ds = xr.open_dataset(romania_path, mask_and_scale=False).isel(time=slice(0, 48)).load()
    clouds = np.isin(ds["SCL"].values, SCL_CLOUDS)
    names = ["B2", "B3", "B4", "B8"]
    assert 0.05 < clouds.mean() < 0.5 and not any((ds[b].values == 0).any() for b in names)
    for b in names:
        ds[b].values[clouds] = 0
    ds.to_netcdf(tmp_path / "masked.nc")
    res = CliRunner().invoke(
        app, ["run", str(tmp_path / "masked.nc"), str(tmp_path / "c.zarr"), "--qp", "24", "--no-quicklook"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["value_range"] == [0.0, 20000.0]
    for opened in (open_compressed(tmp_path / "c.zarr"), open_cube(tmp_path / "c.zarr")):
        for b in names:
            assert opened[b].dtype == np.uint16
            np.testing.assert_array_equal(opened[b].values == 0, clouds)
    out = open_compressed(tmp_path / "c.zarr")
    ref = np.stack([ds[b].values for b in names])
    miss = np.broadcast_to(clouds, ref.shape)
    assert psnr(with_nan(ref, miss), with_nan(stacked(out, names), miss), 20000) > 39
    np.testing.assert_array_equal(out["SCL"].values, ds["SCL"].values)


# 3. the PSNR target and the reported PSNR share one stated peak


def test_psnr_target_and_report_use_one_stated_peak(tmp_path):
    """With the range chosen from the samples (DN: 0..10000), the target is met at the reported peak, and the
    PSNR recomputed from the store as it opens (uint16, fill 0 left out) is the reported one."""
    ds, missing = dn_cube(t=24, fill_attr="nodata")
    target = 42.0
    summary = compress_cube(
        ds,
        tmp_path / "c.zarr",
        CodecParams(preset="ultrafast"),
        target_psnr=target,
        auto_value_range=True,
        time_chunk=8,
        space_chunk=32,
        n_sample_chunks=2,
    )
    lo, hi = summary.value_range
    assert summary.psnr_peak == hi - lo == 10000 and summary.target_psnr == target
    assert summary.psnr >= target and summary.sample_psnr >= target
    out = open_compressed(tmp_path / "c.zarr")
    independent = psnr(with_nan(stacked(ds, BANDS), missing), with_nan(stacked(out, BANDS), missing), summary.psnr_peak)
    assert independent == pytest.approx(summary.psnr, abs=0.01) and independent >= target
    help_text = _option_help("target_psnr")
    assert "peak = hi - lo of --value-range" in help_text and "psnr_peak" in help_text


def _option_help(name: str) -> str:
    """The CLI help text of ``eocube compress run``'s option ``name``."""
    command = typer.main.get_command(app).commands["run"]
    return next(p.help for p in command.params if p.name == name)


# 4. a rate target is met to within 2 %


def uneven_cube(t: int = 48, h: int = 64, w: int = 96) -> xr.Dataset:
    """Demo-like reflectance whose first and last 16 dates are noisy and the rest smooth: sample chunks taken at
    the ends of the chunk grid see more texture than the cube has (its rate comes out under theirs)."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.2 + 0.08 * np.sin(xx / 9 + tt / 5) + 0.05 * np.cos(yy / 6)
    sigma = np.where((np.arange(t) < 16) | (np.arange(t) >= t - 16), 0.03, 0.004)[:, None, None]
    noise = np.random.default_rng(5).normal(0, 1, (t, h, w)) * sigma
    return xr.Dataset(
        {
            b: (("time", "y", "x"), np.clip(base * (0.7 + 0.3 * k) + (0.7 + 0.3 * k) * noise, 0, 1).astype(np.float32))
            for k, b in enumerate(BANDS)
        },
        coords={"time": pd.date_range("2021-01-01", periods=t, freq="5D")},
    )


@pytest.mark.parametrize("target", [0.1, 0.5])
def test_rate_target_is_met_on_the_whole_cube_within_2_percent(tmp_path, target):
    cube = uneven_cube()
    summary = compress_cube(
        cube,
        tmp_path / "c.zarr",
        CodecParams(preset="ultrafast"),
        target_bpppb=target,
        time_chunk=16,
        space_chunk=64,
        n_sample_chunks=2,
    )
    assert abs(summary.bpppb / target - 1) <= RATE_TOLERANCE, summary
    assert summary.target_bpppb == target and QP_MIN <= summary.qp <= QP_MAX
    chunks = [f for f in (tmp_path / "c.zarr" / STACKED).rglob("*") if f.is_file() and f.name != "zarr.json"]
    stored = sum(f.stat().st_size for f in chunks)
    assert summary.stored_bytes == stored  # the store holds the write reported


def test_next_rate_qp_converges_from_either_side():
    target = 0.1
    assert next_rate_qp([(20.0, 0.099)], target) is None  # in the band: stop
    coarser = next_rate_qp([(20.0, 0.12)], target)
    assert coarser == pytest.approx(20 + math.log(0.12 / 0.099) / math.log(1.12), abs=QP_RESOLUTION)
    finer = next_rate_qp([(20.0, 0.08)], target)
    assert finer < 20 and finer % QP_RESOLUTION == 0
    between = next_rate_qp([(20.0, 0.11), (21.0, 0.09)], target)  # a secant inside the bracket
    assert 20 < between < 21 and between == pytest.approx(
        20 + math.log(0.11 / 0.099) / math.log(0.11 / 0.09), abs=QP_RESOLUTION
    )
    slope = next_rate_qp([(18.0, 0.2), (19.0, 0.16)], target)  # the slope two writes measured, not the default
    assert slope == pytest.approx(19 + math.log(0.16 / 0.099) / math.log(0.2 / 0.16), abs=QP_RESOLUTION)
    assert next_rate_qp([(QP_MAX, 0.5)], target) is None  # nothing coarser to try
    assert next_rate_qp([(20.0, 0.11), (20.0 + QP_RESOLUTION, 0.09)], target) is None  # nothing between
    assert best_rate_write([(20.0, 0.103), (21.0, 0.0985), (22.0, 0.09)], target) == (21.0, 0.0985)
    assert best_rate_write([(20.0, 0.101), (21.0, 0.09)], target) == (20.0, 0.101)  # 1 % over beats 10 % under
    assert best_rate_write([(20.0, 0.11), (21.0, 0.09)], target) == (21.0, 0.09)  # else never above


def test_cli_replaces_an_existing_store_only_with_overwrite(tmp_path):
    src = tmp_path / "in.zarr"
    uneven_cube(t=8, h=32, w=64).to_zarr(src, zarr_format=3)
    args = ["run", str(src), str(tmp_path / "out.zarr"), "--qp", "30", "--preset", "ultrafast", "--no-quicklook"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "existing eocube store" in res.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
