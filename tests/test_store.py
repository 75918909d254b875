"""The store layer on small synthetic cubes: CF/GeoZarr metadata, sharding and its
alignment guard, slice planning, overviews, STAC, engines, locks and log redaction."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr
from odc.geo.xr import assign_crs

from pipeline.redaction import RedactingFilter, configure_logging, redact
from pipeline.store import LayoutError, Slice, StoreLayout, check_alignment, plan_slices, write_store
from pipeline.store.engines import ConflictingWriteError, IcechunkEngine, ZarrEngine
from pipeline.store.journal import StoreLockedError, write_lock
from pipeline.store.layout import covered_times
from pipeline.store.overviews import coarsen_cube
from pipeline.store.stac import validate_stac, write_stac

X0, Y1, RES = 619000.0, 5043000.0, 20.0


def synthetic_cube(nt: int = 6, ny: int = 40, nx: int = 60, seed: int = 0) -> xr.Dataset:
    """A small cube following the project's convention (EPSG:32632, 20 m, NaN where invalid)."""
    rng = np.random.default_rng(seed)
    valid = rng.random((nt, ny, nx)) > 0.2
    ds = xr.Dataset(
        {
            b: (("time", "y", "x"), np.where(valid, rng.random((nt, ny, nx)), np.nan).astype(np.float32))
            for b in ("blue", "red", "nir08")
        },
        coords={
            "time": np.datetime64("2022-03-01T10:10:31", "ns") + np.arange(nt) * np.timedelta64(5, "D"),
            "y": Y1 - RES / 2 - RES * np.arange(ny),
            "x": X0 + RES / 2 + RES * np.arange(nx),
            "sensor": ("time", np.array(["sentinel-2", "landsat"] * (nt // 2), dtype=object)),
        },
    )
    ds["valid"] = (("time", "y", "x"), valid)
    ds.attrs["eocube:request"] = json.dumps({"catalog": "demo"})
    ds.attrs["eocube:source_items"] = json.dumps({"sentinel-2": ["S2A_X_1", "S2A_X_2"], "landsat": ["LC09_Y"]})
    return assign_crs(ds, "EPSG:32632")


# ------------------------------------------------------------------ CF / GeoZarr / sharding


def test_sharded_store_is_cf_geozarr_and_roundtrips(tmp_path: Path):
    cube = synthetic_cube()
    path = write_store(
        cube,
        tmp_path / "c.zarr",
        {"time": 1, "y": 20, "x": 20},
        shards={"time": 2, "y": 40, "x": 40},
        overview_levels=1,
    )
    meta = json.loads((path / "red" / "zarr.json").read_text())
    assert meta["dimension_names"] == ["time", "y", "x"]
    shard = meta["codecs"][0]
    assert shard["name"] == "sharding_indexed" and shard["configuration"]["chunk_shape"] == [1, 20, 20]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [2, 40, 40]
    assert meta["fill_value"] == "NaN"
    assert meta["attributes"]["standard_name"] == "surface_bidirectional_reflectance"
    assert meta["attributes"]["grid_mapping"] == "spatial_ref"
    time_meta = json.loads((path / "time" / "zarr.json").read_text())
    assert time_meta["attributes"]["units"].startswith("seconds since 1970-01-01")
    assert time_meta["data_type"] == "int64"
    root = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" in root and "red" in root["consolidated_metadata"]["metadata"]

    ds = xr.open_zarr(path)
    gt = [float(v) for v in ds["spatial_ref"].attrs["GeoTransform"].split()]
    assert gt == [X0, RES, 0.0, Y1, 0.0, -RES]
    assert "UTM zone 32N" in ds["spatial_ref"].attrs["crs_wkt"]
    assert ds.rio.crs.to_epsg() == 32632
    for v in ("blue", "red", "nir08", "valid"):
        np.testing.assert_array_equal(ds[v].values, cube[v].values)
    np.testing.assert_array_equal(ds.time.values, cube.time.values)
    assert list(ds["sensor"].values) == list(cube["sensor"].values)
    ov = xr.open_zarr(path, group="overviews/2x")
    assert ov.sizes == {"time": 6, "y": 20, "x": 30}
    assert root["attributes"]["multiscales"]["layout"][1]["asset"] == "overviews/2x"


def test_misaligned_dask_chunks_are_refused_before_writing(tmp_path: Path):
    layout = StoreLayout({"time": 1, "y": 20, "x": 20}, {"time": 1, "y": 40, "x": 40})
    aligned = synthetic_cube().chunk({"time": 1, "y": 40, "x": 40})
    check_alignment(aligned, layout)
    misaligned = synthetic_cube().chunk({"time": 1, "y": 30, "x": 40})
    with pytest.raises(LayoutError, match=r"y=30 splits a Zarr shard of 40"):
        check_alignment(misaligned, layout)
    # a region write starting inside a shard: the first edge is free, internal boundaries are not
    part = synthetic_cube().isel(y=slice(0, 30)).chunk({"time": 1, "y": 10, "x": 40})
    with pytest.raises(LayoutError, match="splits"):
        check_alignment(part, layout, {"y": slice(30, 60)})
    check_alignment(part.chunk({"y": 10}).isel(y=slice(0, 10)), layout, {"y": slice(30, 40)})
    with pytest.raises(LayoutError, match="not a multiple of the chunk size"):
        StoreLayout({"time": 1, "y": 20, "x": 20}, {"time": 1, "y": 30, "x": 40})


def test_slice_plan_tiles_the_grid_exactly_once_and_skips_committed():
    layout = StoreLayout({"time": 1, "y": 20, "x": 20}, {"time": 2, "y": 40, "x": 40})
    sizes = {"time": 7, "y": 100, "x": 60}
    slices = plan_slices(sizes, layout, tile_px=40, time_step=4)
    cover = np.zeros((7, 100, 60), int)
    for s in slices:
        cover[slice(*s.t), slice(*s.y), slice(*s.x)] += 1
    assert cover.min() == cover.max() == 1
    assert Slice.from_id(slices[3].id) == slices[3]
    done = [s.id for s in slices[:5]]
    rest = plan_slices(sizes, layout, 40, 4, covered_times(done))
    assert {s.id for s in rest} == {s.id for s in slices[5:]}
    # the store grew by 3 time steps: only the new ones of each tile are planned
    grown = plan_slices({**sizes, "time": 10}, layout, 40, 4, covered_times([s.id for s in slices]))
    assert sorted({s.t for s in grown}) == [(7, 8), (8, 10)]
    with pytest.raises(LayoutError, match="not a multiple of the write unit 40"):
        plan_slices(sizes, layout, tile_px=50, time_step=4)
    with pytest.raises(ValueError, match="not a slice id"):
        Slice.from_id("t1_y2")


# ------------------------------------------------------------------ overviews


def test_overview_is_the_nan_aware_block_mean():
    cube = synthetic_cube(nt=2, ny=5, nx=6)
    ov = coarsen_cube(cube, 2)
    red = cube["red"].values.astype(np.float64)
    padded = np.full((2, 6, 6), np.nan)
    padded[:, :5] = red
    expected = np.nanmean(padded.reshape(2, 3, 2, 3, 2), axis=(2, 4))
    np.testing.assert_allclose(ov["red"].values, expected, rtol=1e-6)
    valid = np.zeros((2, 6, 6))
    valid[:, :5] = cube["valid"].values
    counts = np.ones((2, 6, 6))
    counts[:, 5:] = np.nan
    np.testing.assert_allclose(
        ov["valid"].values, np.nanmean((valid * counts).reshape(2, 3, 2, 3, 2), axis=(2, 4)), rtol=1e-6
    )
    np.testing.assert_allclose(ov.x.values, X0 + RES + 2 * RES * np.arange(3))
    np.testing.assert_allclose(ov.y.values, Y1 - RES - 2 * RES * np.arange(3))
    assert [float(v) for v in ov["spatial_ref"].attrs["GeoTransform"].split()] == [X0, 2 * RES, 0.0, Y1, 0.0, -2 * RES]


# ------------------------------------------------------------------ engines, STAC


def _part(cube: xr.Dataset, sl: Slice) -> xr.Dataset:
    sub = cube.isel(time=slice(*sl.t), y=slice(*sl.y), x=slice(*sl.x))
    return sub[["blue", "red", "nir08", "valid"]].drop_vars(list(sub.coords))


@pytest.mark.parametrize("engine_cls", [ZarrEngine, IcechunkEngine])
def test_engine_commits_slices_and_writes_valid_stac(tmp_path: Path, engine_cls):
    from pipeline.store.cf import annotate_cf, encodings

    cube = annotate_cf(synthetic_cube())
    engine = engine_cls(tmp_path / "c.zarr")
    assert not engine.exists()
    engine.create(cube.chunk({"time": 1, "y": 20, "x": 20}), encodings(cube, {"time": 1, "y": 20, "x": 20}))
    assert engine.exists() and engine.committed() == {}
    layout = StoreLayout({"time": 1, "y": 20, "x": 20})
    slices = plan_slices(dict(cube.sizes), layout, 20, 3)
    sources = json.loads(cube.attrs["eocube:source_items"])  # the STAC item lists the committed slices' sources
    for sl in slices[:-1]:
        assert engine.write_slice(_part(cube, sl), sl.region, {"slice": sl.id, "sources": sources})
    assert set(engine.committed()) == {s.id for s in slices[:-1]}
    ds = engine.open()
    last = slices[-1]
    assert np.isnan(ds["red"].isel(time=slice(*last.t), y=slice(*last.y), x=slice(*last.x)).values).all()
    engine.write_slice(_part(cube, last), last.region, {"slice": last.id, "sources": sources})
    np.testing.assert_array_equal(engine.open()["red"].values, cube["red"].values)

    item_path = write_stac(engine)
    checked = validate_stac(item_path)
    assert [c.rsplit("/", 1)[-1] for c in checked] == ["item.json", "collection.json"]
    item = pystac.Item.from_file(item_path)
    lon0, lat0, lon1, lat1 = item.bbox
    assert 10.5 < lon0 < lon1 < 10.6 and 45.5 < lat0 < lat1 < 45.55
    dims = item.properties["cube:dimensions"]
    assert dims["x"]["extent"] == [X0, X0 + 60 * RES] and dims["y"]["reference_system"] == 32632
    assert item.assets["data"].href == "./c.zarr"
    assert sorted(lk.title for lk in item.links if lk.rel == "derived_from") == ["LC09_Y", "S2A_X_1", "S2A_X_2"]
    assert item.properties["start_datetime"] == "2022-03-01T10:10:31Z"
    broken = json.loads(item_path.read_text())
    del broken["properties"]["cube:dimensions"]["x"]["type"]
    item_path.write_text(json.dumps(broken))
    with pytest.raises(Exception, match="type"):
        validate_stac(item_path)


def test_icechunk_conflicting_commits_fail_cleanly_or_skip(tmp_path: Path):
    from pipeline.store.cf import annotate_cf, encodings

    cube = annotate_cf(synthetic_cube())
    a = IcechunkEngine(tmp_path / "ic")
    a.create(cube.chunk({"time": 1, "y": 20, "x": 20}), encodings(cube, {"time": 1, "y": 20, "x": 20}))
    sl = Slice((0, 2), (0, 20), (0, 20))
    # two writers of the same slice from the same base snapshot: the second one finds it committed
    s1, s2 = a._repo().writable_session("main"), a._repo().writable_session("main")
    for s, scale in ((s1, 1.0), (s2, 2.0)):
        (_part(cube, sl) * scale).to_zarr(s.store, group="cube", region=sl.region, mode="r+", consolidated=False)
    a._commit(s1, "slice", {"eocube:slice": {"slice": sl.id}})
    with pytest.raises(ConflictingWriteError, match="conflicts with a concurrent commit"):
        a._commit(s2, "slice", {"eocube:slice": {"slice": sl.id}})
    np.testing.assert_array_equal(
        a.open()["red"].isel(time=slice(0, 2), y=slice(0, 20), x=slice(0, 20)).values,
        cube["red"].isel(time=slice(0, 2), y=slice(0, 20), x=slice(0, 20)).values,
    )
    # disjoint slices from the same base snapshot are rebased, both land
    other = [Slice((0, 2), (20, 40), (0, 20)), Slice((2, 4), (0, 20), (0, 20))]
    sessions = [a._repo().writable_session("main") for _ in other]
    for s, o in zip(sessions, other, strict=True):
        _part(cube, o).to_zarr(s.store, group="cube", region=o.region, mode="r+", consolidated=False)
    for s, o in zip(sessions, other, strict=True):
        a._commit(s, "slice", {"eocube:slice": {"slice": o.id}})
    assert {sl.id, *(o.id for o in other)} <= set(a.committed())
    assert a.write_slice(_part(cube, sl), sl.region, {"slice": sl.id}) is True  # same data again: a new commit


# ------------------------------------------------------------------ locks

HOLD = textwrap.dedent("""
    import sys, time
    from pipeline.store.journal import write_lock
    with write_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", flush=True)
""")


def test_second_writer_fails_cleanly_or_waits_its_turn(tmp_path: Path):
    store = tmp_path / "c.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store), "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"pid={holder.pid}"):
            with write_lock(store, timeout_s=0.5):
                pass
        with write_lock(store, timeout_s=60):  # serialised: granted once the holder exits
            assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ logs

SECRETS = {  # text -> (the secret, a part that must survive)
    "https://acct.blob.core.windows.net/c/x.tif?st=2024-01-01&se=2024-01-02&sp=r&sv=2021&sr=c&sig=AbC%2Bsecret": (
        "AbC%2Bsecret",
        "https://acct.blob.core.windows.net/c/x.tif?st=",
    ),
    "https://bucket.s3.amazonaws.com/x.tif?X-Amz-Credential=AKIAXXX&X-Amz-Signature=deadbeef": (
        "deadbeef",
        "https://bucket.s3.amazonaws.com/x.tif?X-Amz-Credential=",
    ),
    "GET /items?token=eyJhbGciOiJIUzI1NiJ9.payload.sig&limit=10": ("eyJhbGciOiJIUzI1NiJ9", "&limit=10"),
    "headers={'Authorization': 'Bearer abc.def.ghi'}": ("abc.def.ghi", "{'Authorization': 'Bearer "),
    "Authorization: Basic dXNlcjpwYXNz": ("dXNlcjpwYXNz", "Authorization: Basic "),
    "'/vsicurl/http://bob:HUNTER2@127.0.0.1:8765/x.tif' not recognized": ("HUNTER2", "http://bob:"),
    "x.tif?u=https%3A%2F%2Fh%2Fy%3Fsig%3DPCTSECRET%26limit%3D1": ("PCTSECRET", "%26limit%3D1"),
    "https://h/cb?code=OAUTHCODE&auth=AUTHVAL&credential=CRED&limit=3": ("OAUTHCODE", "&limit=3"),
    "catalog at http://alice:CATPW@stac.example/v1?token=TOK is unreachable": ("CATPW", "stac.example/v1?token="),
}


@pytest.mark.parametrize("text", sorted(SECRETS))
def test_redaction_removes_credentials_and_keeps_the_rest(text: str):
    secret, kept = SECRETS[text]
    out = redact(text)
    assert secret not in out and "***" in out and kept in out


def test_structured_logs_are_json_and_redacted():
    stream = StringIO()
    logger = logging.getLogger("eocube.test.redact")
    logger.propagate = False
    handler = configure_logging("INFO", logger, stream)
    try:
        logger.info("reading %s", "https://a.blob.core.windows.net/c/b.tif?sv=1&sig=TOPSECRET", extra={"slice": "t0"})
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["level"] == "INFO" and record["slice"] == "t0" and record["logger"] == "eocube.test.redact"
    assert "TOPSECRET" not in record["message"] and "b.tif?" in record["message"]
    assert RedactingFilter().filter(logging.makeLogRecord({"msg": "token=abc", "args": None}))


def test_open_cube_gives_string_labels_as_fixed_width_str(tmp_path: Path):
    from pipeline.store.open import open_cube

    ds = xr.Dataset(
        {"red": (("time", "y", "x"), np.ones((3, 2, 2), np.float32))},
        coords={"time": np.arange(3), "sensor": ("time", ["landsat", "sentinel-2", "modis"])},
    )
    ds.to_zarr(tmp_path / "c.zarr", zarr_format=3, consolidated=False)
    raw = xr.open_zarr(tmp_path / "c.zarr", consolidated=False)["sensor"]
    opened = open_cube(tmp_path / "c.zarr")
    assert opened["sensor"].dtype.kind == "U" and "sensor" in opened.coords
    assert list(opened["sensor"].astype(str).values) == ["landsat", "sentinel-2", "modis"]
    assert opened.sel(time=opened["sensor"] == "landsat").sizes["time"] == 1  # a selection by label, no compute
    assert raw.dtype.kind in "TUO"  # whatever Zarr gives back, open_cube makes it plain str
