"""Zarr v3 integration, pipeline stage, CLI and real Sentinel-2 data for pipeline.compression."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner
from zarr.errors import UnstableSpecificationWarning

from pipeline.cli.compress import app
from pipeline.compression.codec import CodecParams, decode_array, encode_array, read_header
from pipeline.compression.metrics import psnr
from pipeline.compression.stage import compress_cube, open_compressed
from pipeline.compression.zarr_codec import VideoCodec

BANDS = ["blue", "green", "red", "nir"]


def demo_cube(t: int = 40, h: int = 48, w: int = 80) -> xr.Dataset:
    """A small cube in the pipeline convention: float32 reflectance with NaN clouds, ``valid``, ``sensor``."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.2 + 0.08 * np.sin(xx / 9 + tt / 5) + 0.05 * np.cos(yy / 6)
    valid = ~((tt % 7 == 3) & (xx < 30) & (yy < 20))
    data = {
        b: (("time", "y", "x"), np.where(valid, base * (0.7 + 0.3 * k), np.nan).astype(np.float32))
        for k, b in enumerate(BANDS)
    }
    data["valid"] = (("time", "y", "x"), valid.astype(np.uint8))
    return xr.Dataset(
        data,
        coords={
            "time": pd.date_range("2021-01-01", periods=t, freq="5D"),
            "y": 5_000_000 - 10.0 * np.arange(h),
            "x": 400_000 + 10.0 * np.arange(w),
            "sensor": ("time", ["sentinel-2"] * t),
        },
    )


def test_codec_is_registered_through_the_entry_point(tmp_path):
    from zarr.registry import get_codec_class

    assert get_codec_class("eocube.video") is VideoCodec
    codec = VideoCodec(qp=12, klt=False)
    assert VideoCodec.from_dict(codec.to_dict()) == codec
    with pytest.raises(ValueError, match="unknown eocube.video configuration"):
        VideoCodec.from_dict({"name": "eocube.video", "configuration": {"qualty": 3}})
    with pytest.raises(ValueError, match="does not support dtype"):
        zarr.create_array(
            tmp_path / "bad.zarr", shape=(2, 4, 8, 8), dtype="complex64", serializer=VideoCodec(), compressors=None
        )


def test_stage_round_trip_through_open_zarr_with_dask(tmp_path):
    cube = demo_cube()
    with warnings.catch_warnings():  # text coordinates (band, sensor) go in as stable vlen strings
        warnings.simplefilter("error", UnstableSpecificationWarning)
        summary = compress_cube(
            cube, tmp_path / "c.zarr", CodecParams(qp=10, preset="ultrafast"), time_chunk=32, space_chunk=64
        )
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
    from pipeline.store.open import open_cube  # every stage reads a compressed store as a cube

    reopened = open_cube(tmp_path / "c.zarr")
    assert "reflectance" not in reopened and set(BANDS) <= set(reopened.data_vars)
    np.testing.assert_array_equal(reopened["green"].values, out["green"].values)


def test_whole_cube_psnr_is_the_pooled_psnr_computed_chunk_by_chunk():
    from pipeline.compression.stage import whole_cube_psnr

    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 1, (3, 20, 16, 24))
    test = ref + rng.normal(0, 0.01, ref.shape)
    ref[0, 3] = np.nan
    test[2, :, :4] = np.nan
    dims = ("band", "time", "y", "x")
    lazy = xr.DataArray(test, dims=dims).chunk({"time": 7, "y": 8})
    expected = psnr(ref, test, 1.0)
    assert whole_cube_psnr(xr.DataArray(ref, dims=dims), lazy, 1.0) == pytest.approx(expected, abs=1e-9)
    assert whole_cube_psnr(lazy, lazy, 1.0) == float("inf")


def test_stage_rate_control_meets_psnr_target_on_the_whole_cube(tmp_path):
    cube = demo_cube(t=20, h=32, w=64)
    summary = compress_cube(
        cube,
        tmp_path / "c.zarr",
        CodecParams(preset="ultrafast"),
        target_psnr=48.0,
        time_chunk=20,
        space_chunk=64,
        n_sample_chunks=8,
    )
    assert summary.sample_psnr >= 48.0 and summary.psnr >= 48.0  # the sample is the whole cube here
    assert 0 < summary.qp < 51 and summary.klt


def test_stage_meets_a_psnr_target_above_the_klt_ceiling_without_the_klt(tmp_path):
    from pipeline.compression.ratecontrol import measure
    from pipeline.compression.video import QP_MIN

    rng = np.random.default_rng(11)
    base = demo_cube(t=16, h=32, w=64)
    bands = [f"b{k}" for k in range(6)]  # six bands with their own texture: the KLT's step is the coarser one
    cube = xr.Dataset(
        {
            b: (
                ("time", "y", "x"),
                np.clip(base["red"].values * (0.6 + 0.1 * k) + rng.normal(0, 0.01, base["red"].shape), 0, 1).astype(
                    np.float32
                ),
            )
            for k, b in enumerate(bands)
        },
        coords=base.coords,
    )
    stack = np.stack([cube[b].values for b in bands])
    ceiling = measure([stack], CodecParams(preset="ultrafast", qp=QP_MIN), 1.0).psnr
    direct = measure([stack], CodecParams(preset="ultrafast", qp=QP_MIN, klt=False), 1.0).psnr
    assert direct > ceiling + 1
    target = (ceiling + direct) / 2
    summary = compress_cube(
        cube, tmp_path / "c.zarr", CodecParams(preset="ultrafast"), target_psnr=target, time_chunk=16, space_chunk=64
    )
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
    summary = compress_cube(
        cube, tmp_path / "c.zarr", params, target_psnr=44.0, time_chunk=16, space_chunk=64, n_sample_chunks=1
    )
    assert summary.sample_psnr == sampled.psnr >= 44.0
    assert summary.qp < sampled.qp and summary.psnr >= 44.0  # the whole cube needed a finer QP
    rate = choose_qp(sample_blocks(stack, (16, 32, 64), 1), params, 1.0, target_bpppb=0.3)
    summary = compress_cube(
        cube, tmp_path / "r.zarr", params, target_bpppb=0.3, time_chunk=16, space_chunk=64, n_sample_chunks=1
    )
    assert rate.bpppb <= 0.3 and summary.qp > rate.qp and summary.bpppb <= 0.3  # ... and a coarser one for a rate


@pytest.mark.parametrize("step", [1e-4, None])
def test_stage_lossless_is_exact_on_a_dn_grid(tmp_path, step):
    """With the step given, or found per chunk (reflectance from DN, NaN for clouds)."""
    cube = demo_cube(t=10, h=32, w=40)
    for b in BANDS:
        cube[b] = (np.rint(cube[b] * 10000) * 1e-4).astype(np.float32)
    compress_cube(cube, tmp_path / "c.zarr", CodecParams(mode="lossless", step=step), time_chunk=10)
    out = open_compressed(tmp_path / "c.zarr")
    for b in BANDS:
        np.testing.assert_array_equal(out[b].values, cube[b].values)


def test_stage_picks_bands_and_lossless_layers_in_any_dim_order(tmp_path):
    """Classes and QA go lossless by name, 8-bit type or CF flags; bands in (time, x, y) order are video-coded."""
    cube = demo_cube(t=12, h=32, w=40)
    rng = np.random.default_rng(3)
    scl = rng.integers(0, 12, cube["red"].shape).astype(np.float32)
    scl[np.isnan(cube["red"].values)] = np.nan  # class map decoded as float with NaN fill, as xarray opens SCL
    cube["SCL"] = (("time", "y", "x"), scl)
    cube["QA_PIXEL"] = (
        ("time", "y", "x"),
        rng.choice([21824, 21952, 22280, 55052], cube["red"].shape).astype(np.uint16),
    )
    cube["land"] = (
        ("time", "y", "x"),
        rng.integers(0, 9, cube["red"].shape).astype(np.int16),
        {"flag_values": list(range(9)), "flag_meanings": "a b c d e f g h i"},
    )
    cube["red"].attrs = {"units": "1", "long_name": "red reflectance", "wavelength_um": np.float32(0.665)}
    swapped = cube.transpose("time", "x", "y")  # DeepExtremeCubes-style (time, x, y) variables
    summary = compress_cube(swapped, tmp_path / "c.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=12)
    assert summary.bands == BANDS and summary.lossless_variables == ["valid", "SCL", "QA_PIXEL", "land"]
    out = open_compressed(tmp_path / "c.zarr")
    assert out["red"].dims == out["SCL"].dims == ("time", "x", "y")  # coded on (time, y, x), opened as given
    assert open_compressed(tmp_path / "c.zarr", original_dims=False)["red"].dims == ("time", "y", "x")
    out = out.transpose("time", "y", "x")
    assert out["red"].attrs["long_name"] == "red reflectance" and out["red"].attrs["wavelength_um"] == pytest.approx(
        0.665
    )
    for name in ("SCL", "QA_PIXEL", "land", "valid"):
        np.testing.assert_array_equal(out[name].values, cube[name].values)
        assert out[name].dtype == cube[name].dtype
    assert psnr(cube["red"].values[None], out["red"].values[None], 1.0) > 45

    summary = compress_cube(
        swapped,
        tmp_path / "e.zarr",
        CodecParams(qp=8, preset="ultrafast"),
        time_chunk=12,
        bands=["red", "green"],
        lossless=["valid"],
    )
    assert summary.bands == ["red", "green"] and summary.lossless_variables == ["valid"]
    assert set(open_compressed(tmp_path / "e.zarr").data_vars) == {"red", "green", "valid"}
    with pytest.raises(ValueError, match=r"unknown band variable\(s\) \['swir'\]"):
        compress_cube(cube, tmp_path / "x.zarr", bands=["swir"])
    with pytest.raises(ValueError, match="both as bands and as lossless"):
        compress_cube(cube, tmp_path / "x.zarr", bands=["red"], lossless=["red"])
    with pytest.raises(ValueError, match="no band variables"):
        compress_cube(cube[["valid", "SCL"]], tmp_path / "x.zarr")


def test_stage_codes_a_geographic_cube_and_gives_its_dims_back(tmp_path):
    """A (time, lat, lon) cube, latitude descending as in ERA5 or the Earth System Data Cube, written as the input was."""
    cube = demo_cube(t=12, h=32, w=40).rename(y="lat", x="lon")
    cube = cube.assign_coords(lat=60.0 - 0.25 * np.arange(32), lon=10.0 + 0.25 * np.arange(40)).transpose(
        "time", "lon", "lat"
    )
    summary = compress_cube(
        cube, tmp_path / "g.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=12, target_psnr=40.0
    )
    assert summary.bands == BANDS and summary.psnr >= 40.0
    out = open_compressed(tmp_path / "g.zarr")
    assert out["red"].dims == ("time", "lon", "lat") and out["valid"].dims == ("time", "lon", "lat")  # as input
    out = out.transpose("time", "lat", "lon")
    np.testing.assert_array_equal(out["lat"].values, cube["lat"].values)
    np.testing.assert_array_equal(out["valid"].values, cube["valid"].transpose("time", "lat", "lon").values)
    ref = np.stack([cube[b].transpose("time", "lat", "lon").values for b in BANDS])
    assert psnr(ref, np.stack([out[b].values for b in BANDS]), 1.0) == pytest.approx(summary.psnr)
    assert open_compressed(tmp_path / "g.zarr", original_dims=False)["red"].dims == ("time", "y", "x")


def test_stage_reports_progress_and_never_leaves_a_half_written_store(tmp_path):
    import dask.array as da

    cube = demo_cube(t=40, h=32, w=64)
    cube["elevation"] = (("y", "x"), np.arange(32 * 64, dtype=np.float32).reshape(32, 64))
    cube["t2m"] = (("time",), np.linspace(270, 300, 40, dtype=np.float32), {"units": "K"})  # a weather series
    cube = cube.chunk({"time": 8})  # lazy, as a store opens: variables without a time dim too
    cube["t2m"] = cube["t2m"].chunk({"time": -1})  # one chunk, as a small variable of a store opens
    calls: list[tuple[str, int, int]] = []
    summary = compress_cube(
        cube,
        tmp_path / "c.zarr",
        CodecParams(preset="ultrafast"),
        target_psnr=45.0,
        time_chunk=16,
        space_chunk=64,
        progress=lambda *a: calls.append(a),
    )
    rate = [c for c in calls if c[0] == "rate control"]
    done = [c[1] for c in rate]
    assert sorted(set(done)) == list(range(1, max(done) + 1)) and done == sorted(done) and rate[-1][1] == rate[-1][2]
    written = [c for c in calls if c[0] == f"video, QP {summary.qp:g}"]
    assert written[-1] == (f"video, QP {summary.qp:g}", 3, 3)  # 40 frames in time chunks of 16
    good = open_compressed(tmp_path / "c.zarr")
    np.testing.assert_array_equal(good["elevation"].values, cube["elevation"].values)
    np.testing.assert_array_equal(good["t2m"].values, cube["t2m"].values)

    def fail_late(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:  # the third time chunk: after the first ones are written
            raise OSError("disk went away")
        return block

    broken = cube.copy()
    broken["red"] = (
        cube["red"].dims,
        da.map_blocks(fail_late, cube["red"].data.rechunk((16, 32, 64)), dtype=np.float32),
    )
    with pytest.raises(OSError, match="disk went away"):
        compress_cube(
            broken,
            tmp_path / "c.zarr",
            CodecParams(qp=30, preset="ultrafast"),
            time_chunk=16,
            space_chunk=64,
            n_sample_chunks=1,
            overwrite=True,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]  # no partial store left behind
    np.testing.assert_array_equal(open_compressed(tmp_path / "c.zarr")["red"].values, good["red"].values)


def test_comparison_quicklook_of_the_clearest_frame(tmp_path):
    from PIL import Image

    from pipeline.compression.quicklook import comparison_time
    from pipeline.cube.quicklook import rgb_bands

    assert rgb_bands(["B02", "B03", "B04", "B08"]) == ("B04", "B03", "B02")
    assert rgb_bands(["blue", "green", "red", "nir"]) == ("red", "green", "blue")
    assert rgb_bands(["a", "b"]) == ("a", "a", "a")
    cube = demo_cube(t=12, h=32, w=40)
    cube["blue"][4] = 0.02  # the darkest complete frame; frames 3 and 10 have clouds masked
    cube["blue"][7] = 0.9  # a bright (cloudy) complete frame
    assert comparison_time(cube, BANDS) == 4
    landsat_at_4 = cube.assign_coords(sensor=("time", ["sentinel-2"] * 4 + ["landsat"] + ["sentinel-2"] * 7))
    assert comparison_time(landsat_at_4, BANDS) not in (4, 7)
    summary = compress_cube(
        cube,
        tmp_path / "c.zarr",
        CodecParams(qp=20, preset="ultrafast"),
        time_chunk=12,
        quicklook=tmp_path / "c.quicklook.png",
    )
    assert summary.quicklook == str(tmp_path / "c.quicklook.png")
    with Image.open(summary.quicklook) as image:
        assert image.format == "PNG" and image.size[0] > 2 * image.size[1]  # three panels side by side
    for b in BANDS:
        cube[b] = (np.rint(cube[b] * 10000) * 1e-4).astype(np.float32)
    lossless = compress_cube(
        cube, tmp_path / "l.zarr", CodecParams(mode="lossless", step=1e-4), time_chunk=12, quicklook=tmp_path / "l.png"
    )
    assert lossless.quicklook is None and not (tmp_path / "l.png").exists()  # nothing to compare when exact


def test_stage_takes_a_stacked_dataarray(tmp_path):
    """A stackstac-style DataArray (time, band, y, x) with coordinates along band is one variable per band."""
    cube = demo_cube(t=10, h=32, w=40)
    arr = cube[BANDS].to_dataarray("band").transpose("time", "band", "y", "x")
    arr = arr.assign_coords(common_name=("band", ["b", "g", "r", "n"]))
    summary = compress_cube(arr, tmp_path / "c.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=10)
    assert summary.bands == BANDS
    out = open_compressed(tmp_path / "c.zarr")
    np.testing.assert_array_equal(np.isnan(out["nir"].values), np.isnan(cube["nir"].values))
    single = compress_cube(arr.isel(band=0), tmp_path / "s.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=10)
    assert single.bands == ["data"]  # an unnamed (time, y, x) DataArray is one band
    held = xr.Dataset({"refl": arr.drop_vars("common_name"), "valid": cube["valid"]})  # a 4-D variable in a Dataset
    summary = compress_cube(held, tmp_path / "d.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=10)
    assert summary.bands == [f"refl_{b}" for b in BANDS] and summary.lossless_variables == ["valid"]
    with pytest.raises(ValueError, match=r"no \['x'\] dim"):
        compress_cube(arr.isel(x=0), tmp_path / "x.zarr")


def test_stage_codes_a_single_image_and_gives_it_back_without_time(tmp_path):
    """A (band, y, x) scene, e.g. one Landsat date, with a cloud: coded as one date, opened as it was."""
    cube = demo_cube(t=4, h=32, w=40)
    scene = cube[BANDS].isel(time=3).to_dataarray("band")  # date 3 carries the NaN cloud
    summary = compress_cube(scene, tmp_path / "one.zarr", CodecParams(qp=8, preset="ultrafast"), target_psnr=45.0)
    assert summary.bands == BANDS and summary.psnr >= 45.0
    out = open_compressed(tmp_path / "one.zarr")
    assert "time" not in out.dims and out["red"].dims == ("y", "x")
    np.testing.assert_array_equal(np.isnan(out["red"].values), np.isnan(scene.sel(band="red").values))
    ref = scene.transpose("band", "y", "x").values
    assert psnr(ref, np.stack([out[b].values for b in BANDS]), 1.0) == pytest.approx(summary.psnr)
    assert open_compressed(tmp_path / "one.zarr", original_dims=False).sizes["time"] == 1


def test_stage_refuses_a_value_range_the_data_fall_outside(tmp_path):
    """Digital numbers coded on the default reflectance range would be clipped: a clear error with a range to use."""
    cube = demo_cube(t=10, h=32, w=40)
    dn = xr.Dataset(
        {
            b: (("time", "y", "x"), np.nan_to_num(np.rint(cube[b].values * 10000) + 3000).astype(np.uint16))
            for b in BANDS
        },
        coords=cube.coords,
    )
    with pytest.raises(ValueError, match=r"outside value_range \(0.0, 1.0\).*value_range=\(0, 10000\)"):
        compress_cube(dn, tmp_path / "x.zarr", CodecParams(qp=8, preset="ultrafast"))
    assert not (tmp_path / "x.zarr").exists()  # refused before anything is written
    summary = compress_cube(
        dn, tmp_path / "c.zarr", CodecParams(qp=8, preset="ultrafast", value_range=(0, 10000)), time_chunk=10
    )
    out = open_compressed(tmp_path / "c.zarr")
    assert summary.bands == BANDS and out["red"].dtype == np.uint16
    assert psnr(dn["red"].values[None].astype(float), out["red"].values[None].astype(float), 10000) > 45
    auto = compress_cube(
        dn, tmp_path / "a.zarr", CodecParams(qp=8, preset="ultrafast"), time_chunk=10, auto_value_range=True
    )  # the hint, taken without asking
    assert auto.value_range == (0, 10000) and auto.psnr_peak == 10000 and summary.value_range == (0, 10000)
    dn["red"][:5] = 65535  # half the frames nodata: not values outside the range
    compress_cube(dn, tmp_path / "n.zarr", CodecParams(qp=8, preset="ultrafast", value_range=(0, 10000), nodata=65535))
    assert (open_compressed(tmp_path / "n.zarr")["red"].values[:5] == 65535).all()


@pytest.mark.parametrize(
    "values, hint",
    [
        (np.linspace(0.0, 1.9, 1000), "value_range=(0, 2)"),  # reflectance with bright clouds
        (np.linspace(0.0, 330.0, 1000), "value_range=(0, 400)"),  # e.g. a temperature in kelvin
        (np.linspace(-0.12, 0.9, 1000), "value_range=(-0.2, 1)"),  # BOA offset: slightly negative reflectance
        (np.linspace(0.0, 30000.0, 1000), "value_range=(0, 65535)"),  # 16-bit digital numbers
    ],
)
def test_value_range_hint_is_the_nearest_physical_bound(values, hint):
    from pipeline.compression.stage import check_value_range

    with pytest.raises(ValueError, match=re.escape(hint)):
        check_value_range([values.reshape(1, 1, 10, 100)], ["b"], (0.1, 0.5))
    check_value_range([values.reshape(1, 1, 10, 100)], ["b"], (float(values.min()), float(values.max())))


def test_value_range_refuses_the_clipping_of_a_few_bright_clouds():
    """0.5 % of the values at reflectance 1.3 pass a share-of-values test, yet clipping them caps the PSNR at 33.5 dB."""
    from pipeline.compression.stage import check_value_range

    rng = np.random.default_rng(4)
    values = rng.uniform(0.02, 0.5, 100_000)
    values[:500] = 1.3  # 0.5 %: under the 1 % share allowed
    with pytest.raises(ValueError, match=r"0\.50% .* limits the PSNR to 33\.\d dB.*value_range=\(0, 2\)"):
        check_value_range([values], ["red"], (0.0, 1.0))
    check_value_range([values], ["red"], (0.0, 2.0))  # the hint passes
    values[:500] = 1.0002  # just above the range: clipping costs nothing visible
    check_value_range([values], ["red"], (0.0, 1.0))


def test_stage_lossless_takes_the_grid_of_a_scaled_int_store(tmp_path):
    """Bands stored as CF-packed uint16 (the cube's storage="scaled-int") code losslessly with no step given."""
    from pipeline.store.open import open_cube

    rng = np.random.default_rng(8)
    dn = rng.integers(1, 12000, (10, 24, 40)).astype(np.uint16)
    cube = xr.Dataset(
        {
            b: (("time", "y", "x"), np.where(dn % 13 == 0, np.nan, (dn + 100 * k) * 1e-4 - 0.1))
            for k, b in enumerate(BANDS)
        }
    )
    packing = {"dtype": "uint16", "scale_factor": 1e-4, "add_offset": -0.1, "_FillValue": 0}
    cube.to_zarr(tmp_path / "in.zarr", zarr_format=3, encoding={b: packing for b in BANDS})
    original = open_cube(tmp_path / "in.zarr")
    assert original["red"].dtype == np.float32 and original["red"].encoding["scale_factor"] == 1e-4
    compress_cube(tmp_path / "in.zarr", tmp_path / "c.zarr", CodecParams(mode="lossless"), time_chunk=10)
    out = open_compressed(tmp_path / "c.zarr")
    for b in BANDS:
        np.testing.assert_array_equal(out[b].values, original[b].values)  # bit for bit, NaN included
    with pytest.raises(ValueError, match="cannot code these float32 values exactly"):  # smooth floats: on no grid
        compress_cube(demo_cube(t=10, h=24, w=40), tmp_path / "x.zarr", CodecParams(mode="lossless"))


def test_cli_run_info_and_errors(tmp_path):
    src = tmp_path / "in.zarr"
    demo_cube(t=12, h=32, w=40).drop_vars("sensor").to_zarr(src, zarr_format=3)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            str(tmp_path / "out.zarr"),
            "--target-bpppb",
            "1.0",
            "--preset",
            "ultrafast",
            "--time-chunk",
            "12",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["bpppb"] <= 1.05 and summary["mode"] == "lossy"
    res = runner.invoke(app, ["info", str(tmp_path / "out.zarr")])
    assert res.exit_code == 0 and json.loads(res.stdout)["codec"]["name"] == "eocube.video"
    res = runner.invoke(app, ["run", str(tmp_path / "missing.zarr"), str(tmp_path / "o2.zarr")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["run", str(src), str(tmp_path / "o3.zarr"), "--mode", "lossy", "--target-psnr", "300"])
    assert res.exit_code == 2 and "out of reach" in res.output
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            str(tmp_path / "o4.zarr"),
            "--qp",
            "20",
            "--preset",
            "ultrafast",
            "--bands",
            "red, nir",
            "--lossless",
            "valid",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bands"] == ["red", "nir"] and json.loads(res.stdout)["lossless_variables"] == [
        "valid"
    ]
    res = runner.invoke(app, ["run", str(src), str(tmp_path / "o5.zarr"), "--bands", "B04"])
    assert res.exit_code == 2 and "unknown band variable" in res.output
    res = runner.invoke(
        app,
        ["run", str(src), str(tmp_path / "o6.zarr"), "--qp", "20.5", "--preset", "ultrafast", "--value-range", "auto"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["value_range"] == [0.0, 1.0] and json.loads(res.stdout)["qp"] == 20.5
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            str(tmp_path / "o7.zarr"),
            "--qp",
            "20",
            "--preset",
            "ultrafast",
            "--klt-scope",
            "chunk",
            "--no-quicklook",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "'klt_scope': 'chunk'" in str(json.loads(runner.invoke(app, ["info", str(tmp_path / "o7.zarr")]).stdout))
    res = runner.invoke(app, ["run", str(src), str(tmp_path / "o8.zarr"), "--klt-scope", "pixel"])
    assert res.exit_code == 2 and "klt_scope must be 'auto', 'date' or 'chunk'" in res.output


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
def test_real_sentinel2_netcdf_through_the_stage(shared_dir, tmp_path):
    """The real NetCDF as xarray opens it (uint16 with fill 0 -> float NaN): SCL lossless, bands on 0..20000 DN."""
    path = shared_dir / "data" / "sentinel2-romania" / "sentinel2_cube_subset_romania_10m.nc"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with pytest.raises(ValueError, match=r"value_range=\(0, 20000\).*or --value-range auto"):
        compress_cube(path, tmp_path / "x.zarr")
    res = CliRunner().invoke(
        app, ["run", str(path), str(tmp_path / "auto.zarr"), "--value-range", "auto", "--qp", "24", "--no-quicklook"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["value_range"] == [0.0, 20000.0]  # clouds up to 18,224 DN
    summary = compress_cube(path, tmp_path / "c.zarr", CodecParams(value_range=(0, 20000)), target_psnr=50.0)
    assert summary.bands == ["B2", "B3", "B4", "B8"] and summary.lossless_variables == ["SCL"]
    assert 50.0 <= summary.psnr < 50.3 and summary.bpppb < 1.5  # fractional QPs: the target, not a step above it
    rate = compress_cube(path, tmp_path / "r.zarr", CodecParams(value_range=(0, 20000)), target_bpppb=0.3)
    assert 0.285 <= rate.bpppb <= 0.3 and not float(rate.qp).is_integer()
    ref = xr.open_dataset(path)
    out = open_compressed(tmp_path / "c.zarr")
    np.testing.assert_array_equal(out["SCL"].values, ref["SCL"].values)  # classes exact, NaN fill included
    np.testing.assert_array_equal(np.isnan(out["B8"].values), np.isnan(ref["B8"].values))


@pytest.mark.shared
def test_real_sentinel2_klt_beats_per_band_at_equal_rate(romania):
    """At a matched rate the KLT pipeline reconstructs real Sentinel-2 bands with higher PSNR."""
    from pipeline.compression.ratecontrol import choose_qp

    dn = np.stack([romania[b].values for b in ["B2", "B3", "B4", "B8"]]).astype(np.float32)
    base = CodecParams(value_range=(0, 20000), preset="ultrafast")
    points = {
        k: choose_qp(
            [dn], CodecParams(**{**base.to_json(), "value_range": (0, 20000), "klt": k}), 10000, target_bpppb=0.5
        )
        for k in (True, False)
    }
    assert points[True].bpppb <= 0.5 and points[False].bpppb <= 0.5
    assert points[True].psnr > points[False].psnr


@pytest.mark.shared
def test_real_sentinel2_takes_a_rotation_per_date_and_gains_by_it_at_equal_rate(romania):
    """Real Sentinel-2, clouds in the data: ``klt_scope="auto"`` predicts that a rotation per date pays and
    takes it, and at a matched rate it reconstructs the bands with higher PSNR than one rotation a chunk."""
    from pipeline.compression.ratecontrol import choose_qp

    dn = np.stack([romania[b].values for b in ["B2", "B3", "B4", "B8"]]).astype(np.float32)
    base = CodecParams(value_range=(0, 20000), preset="ultrafast")
    assert "angles" in read_header(encode_array(dn, base))[0]["klt"]
    points = {
        scope: choose_qp([dn], replace(base, klt_scope=scope), 10000, target_bpppb=0.5) for scope in ("auto", "chunk")
    }
    assert points["auto"].bpppb <= 0.5 and points["chunk"].bpppb <= 0.5
    assert points["auto"].psnr > points["chunk"].psnr + 1.0, points  # measured: +1.77 dB


def test_compress_flow_takes_an_automatic_range(tmp_path, prefect_harness):
    """The Prefect flow, run for real: ``params={"value_range": "auto"}`` and a fractional QP on a DN cube."""
    from flows.compression import compress_flow

    cube = demo_cube(t=12, h=32, w=40).drop_vars("sensor")
    dn = xr.Dataset(
        {
            b: (("time", "y", "x"), np.nan_to_num(np.rint(cube[b].values * 10000) + 3000).astype(np.uint16))
            for b in BANDS
        },
        coords=cube.coords,
    )
    dn.to_zarr(tmp_path / "dn.zarr", zarr_format=3)
    summary = compress_flow(
        str(tmp_path / "dn.zarr"),
        str(tmp_path / "out.zarr"),
        params={"value_range": "auto", "qp": 20.5, "preset": "ultrafast"},
    )
    assert summary["value_range"] == (0, 10000) and summary["qp"] == 20.5 and summary["psnr_peak"] == 10000
    assert open_compressed(tmp_path / "out.zarr")["red"].dtype == np.uint16


def test_zarr_edge_chunk_padding_is_not_coded(tmp_path):
    """40 dates in chunks of 32: Zarr hands the codec the last chunk padded to 32 frames with NaN; those
    24 frames are not coded, so the store costs what the two real blocks cost apart."""
    cube = demo_cube(t=40, h=32, w=64).drop_vars(["valid", "sensor"])
    params = CodecParams(qp=20, preset="ultrafast")
    summary = compress_cube(cube, tmp_path / "c.zarr", params, time_chunk=32, space_chunk=64, quicklook=None)
    stack = np.stack([cube[b].values for b in BANDS])
    apart = sum(len(encode_array(stack[:, t : t + 32], params)) for t in (0, 32))
    assert abs(summary.stored_bytes - apart) < 80
    np.testing.assert_array_equal(
        np.isnan(open_compressed(tmp_path / "c.zarr")["red"].values), np.isnan(cube["red"].values)
    )


def test_the_input_is_never_the_output(tmp_path):
    """``compress run X X --overwrite`` would replace the cube being read: refused in one line, X untouched."""
    from typer.testing import CliRunner

    src = tmp_path / "cube.zarr"
    demo_cube(t=4, h=16, w=64).to_zarr(src, zarr_format=3, consolidated=False)
    before = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    for out in (src, src / "inside.zarr"):
        res = CliRunner().invoke(app, ["run", str(src), str(out), "--overwrite"])
        assert res.exit_code == 2 and "is the input" in res.output, res.output
    assert {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_qa_layers_and_packed_bands_come_back_as_they_were_given(tmp_path):
    """A class layer coded lossless (SCL: uint16 with fill 0, decoded to float NaN by xarray) comes back uint16
    with 0 where missing; bands decoded from CF-packed integers come back decoded, packed again when written."""
    import numpy as np

    from pipeline.compression.stage import compress_cube, open_compressed

    cube = demo_cube(t=4, h=16, w=64)
    scl = np.random.default_rng(1).integers(1, 12, (4, 16, 64)).astype("float32")
    scl[:, :3] = np.nan
    cube["SCL"] = (("time", "y", "x"), scl)
    cube["SCL"].encoding = {"dtype": np.dtype("uint16"), "_FillValue": np.uint16(0)}
    cube["red"].encoding = {"dtype": np.dtype("uint16"), "scale_factor": 1e-4, "add_offset": 0.0, "_FillValue": 0}
    compress_cube(cube, tmp_path / "v.zarr", target_psnr=40, auto_value_range=True)
    back = open_compressed(tmp_path / "v.zarr").load()
    assert back["SCL"].dtype == np.uint16
    np.testing.assert_array_equal(back["SCL"].values, np.nan_to_num(scl, nan=0).astype("uint16"))
    assert back["red"].dtype == np.float32 and back["red"].encoding["dtype"] == "uint16"
    assert back["red"].encoding["scale_factor"] == 1e-4
    back[["red"]].to_zarr(tmp_path / "again.zarr", zarr_format=3, consolidated=False)
    import zarr

    assert zarr.open_array(str(tmp_path / "again.zarr" / "red")).dtype == np.uint16
