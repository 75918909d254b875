"""Catalog definitions and robust search against a real STAC API (rustac) on loopback,
behind a fault-injecting proxy (503/429, slow answers, dropped connections)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pystac
import pytest

from faults import FaultPlan, FaultyProxy
from pipeline.catalog import CatalogError, EmptySearchError, deduplicate, known_catalogs, load_catalog, search_items
from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.search import group_by_solar_day, solar_day
from pipeline.catalog.server import free_port, serve_archive
from pipeline.demo.archive import DEMO_SITE
from pipeline.model import CubeRequest
from pipeline.sensors import load_profile


def _request(**kw) -> CubeRequest:
    fields = dict(
        catalog="demo",
        bbox=DEMO_SITE.aoi_lonlat(),
        start=dt.date(2022, 2, 1),
        end=dt.date(2022, 4, 30),
        sensors=["sentinel-2", "landsat"],
    )
    return CubeRequest(**{**fields, **kw})


def _demo_catalog(**search) -> CatalogConfig:
    cat = load_catalog("demo")
    return cat.model_copy(update={"search": cat.search.model_copy(update=search)})


def _expected_ids(archive: Path, collection: str, request: CubeRequest) -> set[str]:
    """Independent count: items of the archive's JSON inside the request's dates."""
    features = json.loads((archive / "stac" / collection / "items.json").read_text())["features"]
    out = set()
    for f in features:
        day = dt.date.fromisoformat(f["properties"]["datetime"][:10])
        cc = f["properties"]["eo:cloud_cover"]
        if request.start <= day <= request.end and (request.max_cloud_cover is None or cc <= request.max_cloud_cover):
            out.add(f["id"])
    return out


@pytest.fixture(scope="module")
def proxied_api(demo_archive: Path):
    """rustac behind a proxy whose plan each test sets; links point at the proxy."""
    port = free_port()
    plan = FaultPlan()
    proxy = FaultyProxy("http://127.0.0.1:1", plan, port=port)  # upstream set below
    with serve_archive(demo_archive, public_url=proxy.url) as upstream:
        proxy.upstream = upstream
        with proxy:
            yield proxy


def test_every_catalog_yaml_parses_and_maps_to_known_profiles():
    names = known_catalogs()
    assert {"demo", "planetary-computer", "earth-search", "cmr-lpdaac"} <= set(names)
    for name in names:
        cat = load_catalog(name)
        for sensor in cat.collections:
            load_profile(cat.profile_for(sensor))  # raises for an unknown profile or collection


@pytest.mark.parametrize("catalog", ["planetary-computer", "earth-search", "cmr-lpdaac", "demo"])
def test_every_sensor_a_catalog_serves_can_be_requested(catalog: str, tmp_path):
    """One source of sensor names: the catalog's. A request for any of them passes the checks made
    before the search (modis-vi, modis-nbar, sentinel-2-legacy were refused by a global list once)."""
    from pipeline.chain.preflight import preflight
    from pipeline.model import CubeRequest

    for sensor in load_catalog(catalog).collections:
        request = CubeRequest(
            catalog=catalog,
            bbox=(10.52, 45.51, 10.55, 45.53),
            start="2022-01-01",
            end="2022-01-31",
            sensors=[sensor],
            output=tmp_path / f"{sensor}.zarr",
            resolution=30.0,
        )
        preflight(request)
    with pytest.raises(
        CatalogError, match=rf"catalog '{catalog}' has no collection for sensor 'sentinel-3'; it serves"
    ):
        preflight(
            CubeRequest(
                catalog=catalog,
                bbox=(10.52, 45.51, 10.55, 45.53),
                start="2022-01-01",
                end="2022-01-31",
                sensors=["sentinel-3"],
                output=tmp_path / "x.zarr",
            )
        )


def test_unknown_catalog_and_sensor_errors():
    with pytest.raises(CatalogError, match="unknown catalog 'nope'"):
        load_catalog("nope")
    with pytest.raises(CatalogError, match="no collection for sensor 'modis'"):
        load_catalog("earth-search").collection_for("modis")


def test_paging_returns_every_item_once(proxied_api, demo_archive: Path):
    proxied_api.plan.__init__()  # no faults
    request = _request()
    big = search_items(request, _demo_catalog(limit=100), proxied_api.url)
    small = search_items(request, _demo_catalog(limit=3), proxied_api.url)
    for sensor, collection in (("sentinel-2", "sentinel-2-l2a"), ("landsat", "landsat-c2-l2")):
        ids = [i.id for i in small[sensor].items]
        assert len(ids) == len(set(ids))
        assert set(ids) == {i.id for i in big[sensor].items} == _expected_ids(demo_archive, collection, request)
    assert proxied_api.plan.counts["forwarded"] > 6, "small pages must take several requests"


def test_cloud_cover_prefilter(proxied_api, demo_archive: Path):
    proxied_api.plan.__init__()
    request = _request(max_cloud_cover=20)
    found = search_items(request, _demo_catalog(), proxied_api.url)
    ids = {i.id for i in found["sentinel-2"].items}
    assert ids == _expected_ids(demo_archive, "sentinel-2-l2a", request)
    assert all(i.properties["eo:cloud_cover"] <= 20 for i in found["sentinel-2"].items)


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(error_share=0.4, error_status=503, seed=1),
        FaultPlan(error_share=0.4, error_status=429, seed=2),
        FaultPlan(drop_share=0.3, seed=3),
        FaultPlan(slow_share=0.3, slow_seconds=1.5, seed=4),
    ],
    ids=["503", "429", "dropped", "slow"],
)
def test_search_survives_transient_faults(proxied_api, demo_archive: Path, plan: FaultPlan):
    proxied_api.plan.__init__()
    request = _request()
    catalog = _demo_catalog(limit=5, retries=8, backoff_s=0.01, timeout_s=1.0)
    proxied_api.plan = plan
    try:
        found = search_items(request, catalog, proxied_api.url)
    finally:
        injected = sum(v for k, v in plan.counts.items() if k != "forwarded")
        proxied_api.plan = FaultPlan()
    assert injected > 0, "the plan must have injected faults"
    assert {i.id for i in found["sentinel-2"].items} == _expected_ids(demo_archive, "sentinel-2-l2a", request)


def test_client_error_is_not_retried_and_is_clear(proxied_api):
    proxied_api.plan = FaultPlan(always_status=400)
    try:
        with pytest.raises(CatalogError, match="demo"):
            search_items(_request(), _demo_catalog(retries=5), proxied_api.url)
        assert proxied_api.plan.counts["forwarded"] + proxied_api.plan.counts["error"] <= 2
    finally:
        proxied_api.plan = FaultPlan()


def test_unreachable_catalog_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CatalogError, match="unreachable"):
        search_items(_request(), _demo_catalog(retries=1, backoff_s=0.01, timeout_s=1.0), url)


def test_empty_search_names_the_request(proxied_api):
    proxied_api.plan = FaultPlan()
    with pytest.raises(EmptySearchError, match="no items"):
        search_items(_request(start=dt.date(2015, 1, 1), end=dt.date(2015, 1, 31)), _demo_catalog(), proxied_api.url)


def test_deduplicate_keeps_the_latest_processing(demo_archive: Path):
    features = json.loads((demo_archive / "stac" / "sentinel-2-l2a" / "items.json").read_text())["features"][:5]
    items = [pystac.Item.from_dict(copy.deepcopy(f)) for f in features]
    reprocessed = pystac.Item.from_dict(copy.deepcopy(features[2]))
    reprocessed.id = reprocessed.id[:-15] + "20991231T000000"
    reprocessed.properties["s2:generation_time"] = "2099-12-31T00:00:00.000000Z"
    kept, dropped = deduplicate(items + [reprocessed])
    assert [i.id for i in kept] == [i.id for i in items[:2]] + [reprocessed.id] + [i.id for i in items[3:]]
    assert dropped == [items[2].id]


def test_solar_day_groups_a_real_overpass(shared_dir: Path):
    """33 real Planetary Computer S2 tiles from one overpass on 2019-01-01 (around 00:00 UTC, near 174 E)."""
    fc = json.loads((shared_dir / "data/stac/planetary-computer/search-sentinel-2-l2a-2019-01-01.json").read_text())
    items = [pystac.Item.from_dict(f) for f in fc["features"]]
    groups = group_by_solar_day(items)
    # 00:00 UTC at ~174 E is ~11:36 local solar time on 1 January
    assert list(groups) == [dt.date(2019, 1, 1)]
    assert len(groups[dt.date(2019, 1, 1)]) == 33
    west = pystac.Item.from_dict({**fc["features"][0], "bbox": [-170.0, 57.6, -169.5, 58.3]})
    assert solar_day(west) == dt.date(2018, 12, 31), "00:00 UTC at 170 W is the previous local day"
    kept, dropped = deduplicate(items)
    assert len(kept) == 33 and dropped == []


def test_planetary_computer_signer_caches_and_refreshes_tokens():
    """Against a real token endpoint on loopback that issues short-lived SAS tokens."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.catalog.signing import PlanetaryComputerSigner

    issued: list[str] = []

    class TokenHandler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            n = len(issued)
            # the first token lives a second; the second an hour
            life = dt.timedelta(seconds=1) if n == 0 else dt.timedelta(minutes=60)
            expiry = (dt.datetime.now(dt.UTC) + life).isoformat().replace("+00:00", "Z")
            token = f"sv=2021&se=x&sig=token{n}"
            issued.append(self.path)
            body = json.dumps({"msft:expiry": expiry, "token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        signer = PlanetaryComputerSigner(f"http://127.0.0.1:{server.server_address[1]}/api/sas/v1/token")
        href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/32/T/PR/B02.tif"
        first = signer.sign(href)
        assert first == href + "?sv=2021&se=x&sig=token0"
        assert signer.sign(href) == first  # fresh: cached
        time.sleep(0.9)
        second = signer.sign(href)  # token0 is in the last quarter of its life: refreshed
        assert second.endswith("sig=token1")
        third = signer.sign(href.replace("B02", "B03"))  # same container: cached token1
        assert third.endswith("sig=token1") and len(issued) == 2
        assert issued[0] == "/api/sas/v1/token/sentinel2l2a01/sentinel2-l2"
        assert signer.sign("file:///tmp/x.tif") == "file:///tmp/x.tif"
        assert signer.sign(second) == second, "an already signed href is left alone"
    finally:
        server.shutdown()
