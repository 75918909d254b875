"""Readers and the multi-sensor grid on the demo archive: odc-stac and stackstac agree,
native dtypes and nodata are kept, COG overviews serve coarser grids, and the per-variable
resampling does what it says (checked against the COG pixels read with rasterio)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.cube.grid import request_geobox
from pipeline.cube.load import asset_table, load_sensor, resampling_for
from pipeline.cube.readers import read_assets
from pipeline.sensors import load_profile
from test_cube_support import demo_found, small_request

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _path(href: str) -> Path:
    return Path(unquote(urlparse(href).path))


def _window_of(geobox: GeoBox, src) -> tuple[slice, slice]:
    """Rows/cols of ``src`` (same CRS, grid-aligned) covered by ``geobox``."""
    inv = ~src.transform
    c0, r0 = inv * (geobox.affine.c, geobox.affine.f)
    return slice(round(r0), round(r0) + geobox.shape.y), slice(round(c0), round(c0) + geobox.shape.x)


@pytest.mark.parametrize("sensor,resolution,method", [("landsat", 20.0, "bilinear"), ("sentinel-2", 10.0, "nearest")])
def test_odc_stac_and_stackstac_give_the_same_cube(demo_archive: Path, sensor: str, resolution: float, method: str):
    """Same pixels from both readers where neither takes an overview (finer grid, or native and aligned)."""
    request = small_request(sensors=[sensor], resolution=resolution, resampling={"reflectance": method})
    found = demo_found(demo_archive, request)[sensor]
    geobox = request_geobox(request)
    cubes = {
        engine: load_sensor(
            found, geobox, ["red", "nir08", "swir16"], resampling=request.resampling, engine=engine
        ).compute(scheduler="threads")
        for engine in ("odc-stac", "stackstac")
    }
    a, b = cubes["odc-stac"], cubes["stackstac"]
    assert a.sizes["time"] == len(found.items) >= 3
    np.testing.assert_array_equal(a.time.values, b.time.values)
    np.testing.assert_array_equal(a.x.values, b.x.values)
    for v in ("red", "nir08", "swir16", "valid"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert 0.1 < float(a["valid"].mean()) < 1.0


@pytest.mark.parametrize("engine", ["odc-stac", "stackstac"])
def test_raw_reads_keep_native_dtype_and_nodata(demo_archive: Path, engine: str):
    request = small_request(sensors=["sentinel-2", "modis"], resolution=20.0)
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    for sensor, dtypes, nodata in (
        ("sentinel-2", {"B04": "uint16", "SCL": "uint8"}, {"B04": 0, "SCL": 0}),
        (
            "modis",
            {"sur_refl_b01": "int16", "sur_refl_state_500m": "uint16"},
            {"sur_refl_b01": -28672, "sur_refl_state_500m": 65535},
        ),
    ):  # QA: the product's fill code
        profile = load_profile(found[sensor].profile)
        table = asset_table(profile, ["red"])
        raw = read_assets(
            found[sensor].items[:2],
            found[sensor].collection,
            table,
            geobox,
            chunks={"time": 1, "y": 32, "x": 16},
            resampling=resampling_for(profile, ["red"], {}),
            engine=engine,
        )
        assert {k: str(raw[k].dtype) for k in raw.data_vars} == dtypes, engine
        assert {k: raw[k].attrs.get("nodata") for k in raw.data_vars} == nodata, engine
        red = raw[profile.band("red").asset]
        assert red.chunks[0][0] == 1 and red.chunks[1][0] == 32 and red.chunks[2][0] == 16
        assert red.sizes["time"] == 2


def test_coarser_grid_reads_the_cog_overview(demo_archive: Path):
    """At 20 m, Sentinel-2 B02 (10 m COG, 2x overview built with nearest) comes from the overview:
    even with 'average' resampling it equals the overview pixels, not the 2x2 block means."""
    request = small_request(sensors=["sentinel-2"], resolution=20.0)
    found = demo_found(demo_archive, request)["sentinel-2"]
    item = found.items[0]
    geobox = request_geobox(request)
    profile = load_profile(found.profile)
    raw = read_assets(
        [item],
        found.collection,
        asset_table(profile, ["blue"]),
        geobox,
        chunks={"time": 1, "y": 64, "x": 64},
        resampling={"B02": "average", "SCL": "nearest"},
    ).compute(scheduler="threads")
    href = _path(item.assets["B02"].href)
    with rasterio.open(href) as full, rasterio.open(href, overview_level=0) as ovr:
        assert full.overviews(1) == [2]
        expected = ovr.read(1)[_window_of(geobox, ovr)]
        rows, cols = _window_of(
            GeoBox((geobox.shape.y * 2, geobox.shape.x * 2), geobox.affine * geobox.affine.scale(0.5), geobox.crs), full
        )
        block_mean = (
            full.read(1)[rows, cols].astype(np.float64).reshape(geobox.shape.y, 2, geobox.shape.x, 2).mean(axis=(1, 3))
        )
    np.testing.assert_array_equal(raw["B02"].values[0], expected)
    assert raw["B02"].dtype == np.uint16
    assert np.abs(expected - block_mean).max() > 50, "overview and block mean must differ for the test to discriminate"


def _block_geobox(src, factor: int, offset: int, size: int) -> GeoBox:
    """A GeoBox aligned with ``src``'s pixels, ``factor`` times coarser, starting ``offset`` pixels in."""
    t = src.transform
    return GeoBox((size, size), t * t.translation(offset, offset) * t.scale(factor), src.crs)


def test_average_resampling_is_the_block_mean_and_qa_stays_nearest(demo_archive: Path):
    """Landsat (no overviews) at 60 m with 'average': reflectance = mean of the 2x2 DNs x 2.75e-5 - 0.2;
    the QA band, resampled with nearest, only holds values present in the source."""
    request = small_request(sensors=["landsat"], resampling={"reflectance": "average", "qa": "nearest"})
    found = demo_found(demo_archive, request)["landsat"]
    with rasterio.open(_path(found.items[0].assets["red"].href)) as src:
        assert src.overviews(1) == []
        geobox = _block_geobox(src, 2, 10, 30)
    cube = load_sensor(found, geobox, ["red"], resampling=request.resampling).compute(scheduler="threads")
    profile = load_profile(found.profile)
    raw = read_assets(
        found.items,
        found.collection,
        asset_table(profile, ["red"]),
        geobox,
        chunks={"time": 1, "y": 64, "x": 64},
        resampling=resampling_for(profile, ["red"], request.resampling),
    ).compute(scheduler="threads")
    checked = 0
    for t, item in enumerate(found.items):
        with rasterio.open(_path(item.assets["red"].href)) as src:
            dn = src.read(1)[10:70, 10:70].astype(np.float64).reshape(30, 2, 30, 2)
        with rasterio.open(_path(item.assets["qa_pixel"].href)) as src:
            qa_values = np.unique(src.read(1))
        ok = np.isfinite(cube["red"].values[t]) & (dn > 0).all(axis=(1, 3))
        np.testing.assert_allclose(
            cube["red"].values[t][ok], dn.mean(axis=(1, 3))[ok] * 2.75e-5 - 0.2, atol=0.5 * 2.75e-5 + 1e-7
        )  # GDAL rounds the average to a whole DN
        assert np.isin(raw["qa_pixel"].values[t], qa_values).all()
        checked += int(ok.sum())
    assert checked > 500
    with pytest.raises(ValueError, match="QA asset 'SCL' must be resampled with nearest or mode"):
        resampling_for(load_profile("sentinel-2-l2a"), ["blue"], {"qa": "bilinear"})


def test_three_sensors_on_one_grid(demo_archive: Path):
    from pipeline.cube.assemble import build_cube

    request = small_request(sensors=["sentinel-2", "landsat", "modis"], resolution=20.0)
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    cube = build_cube(request, found, geobox, ["red", "nir08"]).compute(scheduler="threads")
    assert set(cube["sensor"].values) == {"sentinel-2", "landsat", "modis"}
    assert cube.sizes["time"] == sum(len(s.items) for s in found.values())
    assert (cube.sizes["y"], cube.sizes["x"]) == geobox.shape
    assert cube.odc.geobox == geobox
    assert np.all(np.diff(cube.time.values) >= np.timedelta64(0))
    for sensor in ("sentinel-2", "landsat", "modis"):
        part = cube["red"].where(cube["sensor"] == sensor, drop=True)
        assert np.nanmin(part.values) > -0.2 and np.nanmax(part.values) < 1.6 and np.isfinite(part.values).any()
    assert np.isfinite(cube["cloud_cover"].values).all()


def test_one_sensor_cube_keeps_its_grid_and_writes(demo_archive: Path, tmp_path: Path):
    """A single sensor takes the no-concat path: the CRS and grid must survive into the store."""
    from pipeline.cube.assemble import build_cube
    from pipeline.store.zarr_store import write_store

    request = small_request(sensors=["sentinel-2"], resolution=20.0)
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    cube = build_cube(request, found, geobox, ["red"])
    assert cube.odc.geobox == geobox and "source_items" in cube.attrs
    path = write_store(cube, tmp_path / "one.zarr", {"time": 1, "y": 64, "x": 64})
    back = xr.open_zarr(path, decode_coords="all")
    assert back.odc.crs == geobox.crs and back.sizes["time"] == cube.sizes["time"]
