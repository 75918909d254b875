"""Zarr v3 integration, pipeline stage, CLI and real Sentinel-2 data for pipeline.compression."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from zarr.errors import UnstableSpecificationWarning
from typer.testing import CliRunner

from pipeline.compression.cli import app
from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.metrics import psnr
from pipeline.compression.stage import compress_cube, open_compressed
from pipeline.compression.zarr_codec import VideoCodec

BANDS = ["blue", "green", "red", "nir"]


def demo_cube(t: int = 40, h: int = 48, w: int = 80) -> xr.Dataset:
    """A small cube in the pipeline convention: float32 reflectance with NaN clouds, ``valid``, ``sensor``."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.2 + 0.08 * np.sin(xx / 9 + tt / 5) + 0.05 * np.cos(yy / 6)
    valid = ~((tt % 7 == 3) & (xx < 30) & (yy < 20))
    data = {b: (("time", "y", "x"), np.where(valid, base * (0.7 + 0.3 * k), np.nan).astype(np.float32))
            for k, b in enumerate(BANDS)}
    data["valid"] = (("time", "y", "x"), valid.astype(np.uint8))
    return xr.Dataset(data, coords={"time": pd.date_range("2021-01-01", periods=t, freq="5D"),
                                    "y": 5_000_000 - 10.0 * np.arange(h), "x": 400_000 + 10.0 * np.arange(w),
                                    "sensor": ("time", ["sentinel-2"] * t)})


def test_codec_is_registered_through_the_entry_point(tmp_path):
    from zarr.registry import get_codec_class

    assert get_codec_class("eocube.video") is VideoCodec
    codec = VideoCodec(qp=12, klt=False)
    assert VideoCodec.from_dict(codec.to_dict()) == codec
    with pytest.raises(ValueError, match="unknown eocube.video configuration"):
        VideoCodec.from_dict({"name": "eocube.video", "configuration": {"qualty": 3}})
    with pytest.raises(ValueError, match="does not support dtype"):
        zarr.create_array(tmp_path / "bad.zarr", shape=(2, 4, 8, 8), dtype="complex64", serializer=VideoCodec(),
                          compressors=None)


def test_stage_round_trip_through_open_zarr_with_dask(tmp_path):
    cube = demo_cube()
    with warnings.catch_warnings():  # text coordinates (band, sensor) go in as stable vlen strings
        warnings.simplefilter("error", UnstableSpecificationWarning)
        summary = compress_cube(cube, tmp_path / "c.zarr", CodecParams(qp=10, preset="ultrafast"), time_chunk=32,
                                space_chunk=64)
    meta = json.loads((tmp_path / "c.zarr" / "reflectance" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "eocube.video"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 32, 48, 64]
    out = open_compressed(tmp_path / "c.zarr")
    assert list(out.data_vars)[:4] == BANDS
    assert out["red"].chunks == ((32, 8), (48,), (64, 16))  # lazy, one dask chunk per zarr chunk
    for b in BANDS:
        np.testing.assert_array_equal(np.isnan(out[b].values), np.isnan(cube[b].values))
    assert psnr(cube["red"].values[None], out["red"].values[None], 1.0) > 45
    np.testing.assert_array_equal(out["valid"].values, cube["valid"].values)  # ffv1 lossless
    assert (out["sensor"].values == cube["sensor"].values).all()
    assert summary.bpppb < 4 and summary.psnr > 45
    stacked = open_compressed(tmp_path / "c.zarr", split=False)["reflectance"]
    assert stacked.dims == ("band", "time", "y", "x") and list(stacked["band"].values) == BANDS
    from pipeline.cube.source import open_cube  # every stage reads a compressed store as a cube

    reopened = open_cube(tmp_path / "c.zarr")
    assert "reflectance" not in reopened and set(BANDS) <= set(reopened.data_vars)
    np.testing.assert_array_equal(reopened["green"].values, out["green"].values)


def test_stage_rate_control_meets_psnr_target_on_the_whole_cube(tmp_path):
    cube = demo_cube(t=20, h=32, w=64)
    summary = compress_cube(cube, tmp_path / "c.zarr", CodecParams(preset="ultrafast"), target_psnr=48.0,
                            time_chunk=20, space_chunk=64, n_sample_chunks=8)
    assert summary.sample_psnr >= 48.0 and summary.psnr >= 48.0  # the sample is the whole cube here
    assert 0 < summary.qp < 51 and summary.klt


def test_stage_meets_a_psnr_target_above_the_klt_ceiling_without_the_klt(tmp_path):
    from pipeline.compression.ratecontrol import measure
    from pipeline.compression.video import QP_MIN

    rng = np.random.default_rng(11)
    base = demo_cube(t=16, h=32, w=64)
    bands = [f"b{k}" for k in range(6)]  # six bands with their own texture: the KLT's step is the coarser one
    cube = xr.Dataset({b: (("time", "y", "x"), np.clip(base["red"].values * (0.6 + 0.1 * k)
                                                         + rng.normal(0, 0.01, base["red"].shape), 0, 1).astype(np.float32))
                       for k, b in enumerate(bands)}, coords=base.coords)
    stack = np.stack([cube[b].values for b in bands])
    ceiling = measure([stack], CodecParams(preset="ultrafast", qp=QP_MIN), 1.0).psnr
    direct = measure([stack], CodecParams(preset="ultrafast", qp=QP_MIN, klt=False), 1.0).psnr
    assert direct > ceiling + 1
    target = (ceiling + direct) / 2
    summary = compress_cube(cube, tmp_path / "c.zarr", CodecParams(preset="ultrafast"), target_psnr=target,
                            time_chunk=16, space_chunk=64)
    assert summary.klt is False and summary.psnr >= target
    codec = json.loads(xr.open_zarr(tmp_path / "c.zarr").attrs["eocube_compression"])["codec"]
    assert codec["configuration"]["klt"] is False


def test_stage_rewrites_when_the_sample_chunks_flatter_the_cube(tmp_path):
    from pipeline.compression.ratecontrol import choose_qp
    from pipeline.compression.stage import sample_blocks

    cube = demo_cube(t=32, h=32, w=64).drop_vars(["valid", "sensor"])
    rng = np.random.default_rng(5)
    for b in BANDS:  # the first 16 steps smooth, the last 16 noisy: one sample chunk sees only the smooth half
        v = cube[b].values.copy()
        v[16:] = np.clip(v[16:] + rng.normal(0, 0.03, v[16:].shape), 0, 1)
        cube[b] = (("time", "y", "x"), v.astype(np.float32))
    params = CodecParams(preset="ultrafast")
    stack = xr.concat([cube[b] for b in BANDS], dim="band").transpose("band", "time", "y", "x")
    sampled = choose_qp(sample_blocks(stack, (16, 32, 64), 1), params, 1.0, target_psnr=44.0)
    summary = compress_cube(cube, tmp_path / "c.zarr", params, target_psnr=44.0, time_chunk=16, space_chunk=64,
                            n_sample_chunks=1)
    assert summary.sample_psnr == sampled.psnr >= 44.0
    assert summary.qp < sampled.qp and summary.psnr >= 44.0  # the whole cube needed a finer QP
    rate = choose_qp(sample_blocks(stack, (16, 32, 64), 1), params, 1.0, target_bpppb=0.3)
    summary = compress_cube(cube, tmp_path / "r.zarr", params, target_bpppb=0.3, time_chunk=16, space_chunk=64,
                            n_sample_chunks=1)
    assert rate.bpppb <= 0.3 and summary.qp > rate.qp and summary.bpppb <= 0.3  # ... and a coarser one for a rate


def test_stage_lossless_is_exact_on_a_dn_grid(tmp_path):
    cube = demo_cube(t=10, h=32, w=40)
    for b in BANDS:
        cube[b] = (np.rint(cube[b] * 10000) * 1e-4).astype(np.float32)
    compress_cube(cube, tmp_path / "c.zarr", CodecParams(mode="lossless", step=1e-4), time_chunk=10)
    out = open_compressed(tmp_path / "c.zarr")
    for b in BANDS:
        np.testing.assert_array_equal(out[b].values, cube[b].values)


def test_cli_run_info_and_errors(tmp_path):
    src = tmp_path / "in.zarr"
    demo_cube(t=12, h=32, w=40).drop_vars("sensor").to_zarr(src, zarr_format=3)
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(src), str(tmp_path / "out.zarr"), "--target-bpppb", "1.0",
                              "--preset", "ultrafast", "--time-chunk", "12"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["bpppb"] <= 1.05 and summary["mode"] == "lossy"
    res = runner.invoke(app, ["info", str(tmp_path / "out.zarr")])
    assert res.exit_code == 0 and json.loads(res.stdout)["codec"]["name"] == "eocube.video"
    res = runner.invoke(app, ["run", str(tmp_path / "missing.zarr"), str(tmp_path / "o2.zarr")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["run", str(src), str(tmp_path / "o3.zarr"), "--mode", "lossy", "--target-psnr", "300"])
    assert res.exit_code == 2 and "out of reach" in res.output


@pytest.fixture(scope="module")
def romania(shared_dir):
    path = shared_dir / "data" / "sentinel2-romania" / "sentinel2_cube_subset_romania_10m.nc"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return xr.open_dataset(path, mask_and_scale=False).isel(time=slice(0, 32), y=slice(0, 64), x=slice(0, 64)).load()


@pytest.mark.shared
def test_real_sentinel2_lossless_and_lossy(romania):
    dn = np.stack([romania[b].values for b in ["B2", "B3", "B4", "B8"]])
    assert dn.dtype == np.uint16
    data = encode_array(dn, CodecParams(mode="lossless", nodata=0))
    np.testing.assert_array_equal(decode_array(data), dn)
    assert len(data) < 0.6 * dn.nbytes
    scl = romania["SCL"].values.astype(np.uint8)
    np.testing.assert_array_equal(decode_array(encode_array(scl, CodecParams(mode="lossless"))), scl)
    lossy = CodecParams(qp=8, value_range=(0, 20000), nodata=0)
    back = decode_array(encode_array(dn, lossy))
    assert psnr(dn.astype(float), back.astype(float), peak=10000) > 45


@pytest.mark.shared
def test_real_sentinel2_klt_beats_per_band_at_equal_rate(romania):
    """At a matched rate the KLT pipeline reconstructs real Sentinel-2 bands with higher PSNR."""
    from pipeline.compression.ratecontrol import choose_qp

    dn = np.stack([romania[b].values for b in ["B2", "B3", "B4", "B8"]]).astype(np.float32)
    base = CodecParams(value_range=(0, 20000), preset="ultrafast")
    points = {k: choose_qp([dn], CodecParams(**{**base.to_json(), "value_range": (0, 20000), "klt": k}), 10000,
                            target_bpppb=0.5) for k in (True, False)}
    assert points[True].bpppb <= 0.5 and points[False].bpppb <= 0.5
    assert points[True].psnr > points[False].psnr
