"""End to end on the demo archive: real COGs, a real STAC API (rustac) on loopback,
pystac-client, odc-stac/GDAL, a real Dask LocalCluster and a real Prefect flow run."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from pystac_client import Client

from pipeline.catalog.server import serve_archive
from pipeline.demo.archive import DEMO_SITE
from pipeline.demo.landscape import TRUTH_NAMES
from pipeline.model import CubeRequest
from pipeline.sensors import invalid_mask, item_band_specs, load_profile, profile_for_collection

COLLECTIONS = ("sentinel-2-l2a", "landsat-c2-l2", "modis-09A1-061")


@pytest.fixture(scope="session")
def stac_api(demo_archive: Path):
    with serve_archive(demo_archive) as url:
        yield url


@pytest.fixture(scope="session")
def demo_store(demo_archive: Path, tmp_path_factory, prefect_harness) -> tuple[Path, object]:
    from flows.build_cube import build_cube

    out = tmp_path_factory.mktemp("demo") / "cube.zarr"
    request = CubeRequest(
        catalog="demo",
        bbox=DEMO_SITE.aoi_lonlat(),
        start=dt.date(2021, 12, 1),
        end=dt.date(2022, 4, 30),
        resolution=10.0,
        output=out,
    )
    summary = build_cube(request, archive=demo_archive)
    return out, summary


def _path(href: str) -> Path:
    """Local path of a ``file://`` asset href."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(href).path))


def _items(archive: Path, collection: str) -> list[dict]:
    return json.loads((archive / "stac" / collection / "items.json").read_text())["features"]


# ----------------------------------------------------------------- archive + API


def test_archive_is_deterministic_and_complete(demo_archive: Path):
    manifest = json.loads((demo_archive / "manifest.json").read_text())
    assert set(manifest["items"]) == set(COLLECTIONS)
    s2 = _items(demo_archive, "sentinel-2-l2a")
    baselines = {f["properties"]["s2:processing_baseline"] for f in s2}
    assert baselines == {"03.01", "04.00"}, "both sides of the 04.00 BOA-offset change must be present"
    covers = [f["properties"]["eo:cloud_cover"] for f in s2]
    assert max(covers) == 100.0 and min(covers) == 0.0, "all-cloudy and clear scenes expected"
    dates = sorted(dt.date.fromisoformat(f["properties"]["datetime"][:10]) for f in s2)
    gaps = np.diff([d.toordinal() for d in dates])
    assert gaps.max() > 5, "some acquisitions must be missing"
    for f in s2[:3]:
        for key, asset in f["assets"].items():
            assert _path(asset["href"]).exists(), key


def test_stac_api_answers_pystac_client(stac_api: str):
    client = Client.open(stac_api)
    ids = {c.id for c in client.get_collections()}
    assert set(COLLECTIONS) <= ids
    bbox = list(DEMO_SITE.aoi_lonlat())
    for collection in COLLECTIONS:
        items = list(client.search(collections=[collection], bbox=bbox, datetime="2022-03-01/2022-03-31").items())
        assert items, collection
        assert all(i.collection_id == collection for i in items)
    # paging: a small page size still returns every item once
    paged = list(client.search(collections=["sentinel-2-l2a"], bbox=bbox, limit=7).items())
    assert len(paged) == len({i.id for i in paged}) > 7
    nothing = list(client.search(collections=["sentinel-2-l2a"], bbox=bbox, datetime="2010-01-01/2010-12-31").items())
    assert nothing == []


def test_demo_items_share_the_real_items_band_mapping(demo_archive: Path, shared_dir: Path):
    pc = shared_dir / "data/stac/planetary-computer"
    real = {
        "sentinel-2-l2a": pc / "sentinel-2-l2a.S2B_MSIL2A_20250312T014549_R074_T53NKG_20250312T041213.json",
        "landsat-c2-l2": pc / "landsat-c2-l2.LC09_L2SP_090091_20250310_02_T1.json",
        "modis-09A1-061": pc / "modis-09A1-061.MYD09A1.A2025057.h35v10.061.2025066034638.json",
    }
    for collection, path in real.items():
        profile = profile_for_collection(collection)
        real_item = pystac.Item.from_file(path)
        demo_item = pystac.Item.from_dict(_items(demo_archive, collection)[0])
        real_specs = {s.asset: s for s in item_band_specs(real_item, profile)}
        demo_specs = {s.asset: s for s in item_band_specs(demo_item, profile)}
        assert set(demo_specs) <= set(real_item.assets), f"{collection}: demo assets missing from the real item"
        for asset, spec in demo_specs.items():
            assert spec.common_name == real_specs[asset].common_name
            assert spec.dtype == real_specs[asset].dtype
            assert spec.scale == pytest.approx(real_specs[asset].scale)
            assert spec.nodata == real_specs[asset].nodata
        assert profile.qa[0].asset in real_item.assets and profile.qa[0].asset in demo_item.assets


# ----------------------------------------------------------------- masks vs truth


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_mask_scores_against_generator_truth(demo_archive: Path, collection: str):
    """Precision/recall of the default mask per truth class, at the QA band's native grid."""
    profile = load_profile(profile_for_collection(collection).id)
    qa_asset = profile.qa[0].asset
    masked = {k: 0 for k in TRUTH_NAMES}
    total = {k: 0 for k in TRUTH_NAMES}
    for feature in _items(demo_archive, collection):
        with rasterio.open(_path(feature["assets"][qa_asset]["href"])) as src:
            qa = src.read(1)
        truth = np.load(demo_archive / "truth" / f"{feature['id']}.npz")["truth"]
        drop = np.asarray(invalid_mask(collection, qa_asset, qa))
        for k in TRUTH_NAMES:
            sel = truth == k
            total[k] += int(sel.sum())
            masked[k] += int(drop[sel].sum())
    report = {TRUTH_NAMES[k]: (masked[k] / total[k] if total[k] else None) for k in TRUTH_NAMES}
    print(f"\n{collection} masked share per truth class: {report}")
    invalid_classes = {"cloud", "cloud_shadow", "nodata"}
    for k, name in TRUTH_NAMES.items():
        if not total[k]:
            continue
        if name in invalid_classes:
            assert report[name] == 1.0, f"{collection}: recall of {name} is {report[name]:.3f}"
        elif name in ("clear", "water", "snow"):
            assert report[name] == 0.0, f"{collection}: {name} pixels wrongly masked ({report[name]:.3f})"
    assert total[1] > 0 and total[2] > 0, "the archive must contain cloud and shadow"


# ----------------------------------------------------------------- the flow


def test_flow_writes_a_cf_store(demo_store, demo_archive: Path):
    store, summary = demo_store
    ds = xr.open_zarr(store)
    assert set(ds["valid"].dims) == {"time", "y", "x"}
    assert {"blue", "green", "red", "nir08", "swir16", "swir22"} <= set(ds.data_vars)
    for b in ("blue", "red"):
        assert ds[b].dtype == np.float32
        assert ds[b].attrs["standard_name"] == "surface_bidirectional_reflectance"
        assert ds[b].attrs["grid_mapping"] == "spatial_ref"
    assert ds.rio.crs.to_epsg() == 32632
    assert float(ds.x[1] - ds.x[0]) == 10.0
    assert set(np.unique(ds["sensor"].values)) == {"sentinel-2", "landsat", "modis"}
    times = ds.time.values
    scenes = times[ds["sensor"].values != "modis"]  # MODIS 8-day composites may start before the window
    assert scenes.min() >= np.datetime64("2021-12-01") and times.max() <= np.datetime64("2022-05-01")
    assert times.min() >= np.datetime64("2021-12-01") - np.timedelta64(8, "D")
    assert np.all(np.diff(times) >= np.timedelta64(0))
    sources = json.loads(ds.attrs["eocube:source_items"])
    assert len(sources["sentinel-2"]) == summary.items_per_sensor["sentinel-2"] > 0
    assert "eocube:request" in ds.attrs and ds.attrs["eocube:version"]
    assert 0.0 < summary.masked_fraction < 1.0
    assert Path(summary.quicklook).exists()
    assert not list(store.parent.glob(f".{store.name}.partial-*")), "temporary store left behind"


@pytest.mark.parametrize("baseline", ["03.01", "04.00"])
def test_store_values_equal_the_cogs(demo_store, demo_archive: Path, baseline: str):
    """A clear pixel's reflectance equals DN * 1e-4 (- 0.1 after baseline 04.00), read from the COG."""
    store, _ = demo_store
    ds = xr.open_zarr(store)
    s2_times = ds.time.values[ds["sensor"].values == "sentinel-2"]
    features = [
        f
        for f in _items(demo_archive, "sentinel-2-l2a")
        if f["properties"]["s2:processing_baseline"] == baseline
        and np.datetime64(f["properties"]["datetime"][:19]) in s2_times
    ]
    assert features, f"no baseline {baseline} scenes in the test period"
    checked = 0
    for f in features:
        t = np.datetime64(f["properties"]["datetime"][:19])
        blue = ds["blue"].sel(time=t).values
        with rasterio.open(_path(f["assets"]["B02"]["href"])) as src:
            dn = src.read(1)
            inverse = ~src.transform
        cols = np.floor(inverse.a * ds.x.values + inverse.c).astype(int)  # pixel containing each cube x
        rows = np.floor(inverse.e * ds.y.values + inverse.f).astype(int)
        expected = dn[np.ix_(rows, cols)].astype(np.float64) * 1e-4 - (0.1 if baseline == "04.00" else 0.0)
        ok = np.isfinite(blue)
        if ok.sum() < 100:
            continue
        np.testing.assert_allclose(blue[ok], expected[ok], atol=1e-6)
        checked += 1
    assert checked > 0


# ----------------------------------------------------------------- bad requests

BAD_REQUESTS = {
    "inverted bbox": (["--bbox", "10.6,45.5,10.5,45.6"], "inverted"),
    "unknown sensor": (["--sensors", "sentinel-3"], "no collection for sensor 'sentinel-3'"),
    "end before start": (["--start", "2022-05-01", "--end", "2022-01-01"], "before start"),
    "unknown catalog": (["--catalog", "no-such-catalog"], "unknown catalog"),
    "empty search": (["--start", "2015-01-01", "--end", "2015-02-01"], "no items"),
    "unknown band": (["--bands", "red,ultraviolet"], "unknown band"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_fail_in_one_line_without_a_store(case: str, demo_archive: Path, tmp_path: Path):
    extra, expected = BAD_REQUESTS[case]
    bbox = ",".join(map(str, DEMO_SITE.aoi_lonlat()))
    args = {
        "--catalog": "demo",
        "--bbox": bbox,
        "--start": "2022-03-01",
        "--end": "2022-03-20",
        "--out": str(tmp_path / "cube.zarr"),
    }
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        args[k] = v
    cmd = [sys.executable, "-m", "pipeline", "run", *[x for kv in args.items() for x in kv]]
    env = {
        "EOCUBE_DEMO_ARCHIVE": str(demo_archive),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0].lower(), proc.stderr[-2000:]
    assert not (tmp_path / "cube.zarr").exists()
    assert not list(tmp_path.glob(".cube.zarr.partial-*"))
