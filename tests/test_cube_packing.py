"""Scaled-integer storage: the cube kept as DN on one CF scale/offset grid decodes to the float32 cube."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.cube.grid import request_geobox
from pipeline.cube.packing import PackedGrid, pack_dn
from pipeline.model import RequestError
from pipeline.store.open import open_cube
from test_cube_support import demo_found, small_request

#: Sentinel-2 items on both sides of processing baseline 04.00 (25 January 2022) in the demo archive.
ACROSS_BASELINE = dict(sensors=["sentinel-2"], start=dt.date(2022, 1, 1), end=dt.date(2022, 2, 15))


def test_pack_dn_shifts_saturates_and_fills():
    dn = np.array([[[1, 500, 65000, 65535]], [[1, 500, 65000, 65535]]], np.uint16)
    invalid = np.array([[[False, True, False, False]], [[False, False, False, True]]])
    out = pack_dn(dn, invalid, shift=np.array([1000, 0]), fill=0)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[[1001, 0, 65535, 65535]], [[1, 500, 65000, 0]]])
    assert PackedGrid("uint16", 1e-4, -0.1, 0).shift(np.array([0.0, -0.1])).tolist() == [1000, 0]


def test_scaled_int_store_decodes_to_the_float32_cube(demo_archive: Path, tmp_path: Path):
    from pipeline.cube.assemble import build_cube
    from pipeline.store.zarr_store import write_store

    request = small_request(**ACROSS_BASELINE)
    found = demo_found(demo_archive, request)
    baselines = {i.properties["s2:processing_baseline"] for i in found["sentinel-2"].items}
    assert {"03.01", "04.00"} <= baselines  # both BOA-offset conventions are in the cube
    geobox = request_geobox(request)
    bands = ["red", "nir08"]
    chunks = {"time": 1, "y": 32, "x": 32}
    as_float = write_store(build_cube(request, found, geobox, bands), tmp_path / "float.zarr", chunks)
    packed_request = request.model_copy(update={"storage": "scaled-int"})
    as_int = write_store(
        build_cube(packed_request, found, geobox, bands), tmp_path / "int.zarr", chunks, overview_levels=1
    )

    red = zarr.open_group(str(as_int))["red"]
    assert red.dtype == np.uint16 and red.fill_value == 0
    assert red.attrs["scale_factor"] == pytest.approx(1e-4) and red.attrs["add_offset"] == pytest.approx(-0.1)
    assert xr.open_zarr(as_int)["red"].dtype == np.float64  # plain xarray: JSON attributes carry no float width
    ref, got = open_cube(as_float), open_cube(as_int)
    assert got.attrs["eocube:storage"] == "scaled-int"
    for b in bands:
        assert got[b].dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got[b].values), np.isnan(ref[b].values))
        np.testing.assert_allclose(got[b].values, ref[b].values, atol=2e-7, rtol=0)
        assert np.isfinite(got[b].values).mean() > 0.3
    np.testing.assert_array_equal(got["valid"].values, ref["valid"].values)
    overview = xr.open_zarr(as_int, group="overviews/2x")
    assert overview["red"].dtype == np.float32 and np.isfinite(overview["red"].values).any()


def test_scaled_int_refuses_sensors_on_different_grids(demo_archive: Path):
    from pipeline.cube.assemble import build_cube

    request = small_request(sensors=["sentinel-2", "landsat"], storage="scaled-int")
    found = demo_found(demo_archive, request)
    with pytest.raises(RequestError, match="band 'red' has scales .* across items"):
        build_cube(request, found, request_geobox(request), ["red"])


def test_a_composite_product_goes_with_any_cube_storage():
    """The composite is a product of its own (float32 statistics) beside the cube, however the cube is stored."""
    request = small_request(storage="scaled-int", composite={"freq": "1MS", "method": "median"})
    assert request.products() == ["composite"] and request.storage == "scaled-int"
