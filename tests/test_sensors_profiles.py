"""Every real STAC item and recorded search response parses into the right profile.

Sources (``shared/data/stac``): single items, FeatureCollections of real searches, and the
response bodies inside the vcrpy cassettes recorded from Planetary Computer, Earth Search
and the USGS stac-server. Expected values are stated here from the product documents
(profile ids per collection, scale/offset per product, the Sentinel-2 baseline rule), not
read back from the profiles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.sensors import (
    asset_grid,
    item_band_specs,
    load_profile,
    profile_for_collection,
    profile_for_item,
)
from pipeline.sensors.profiles import known_profiles

EXPECTED_PROFILE = {
    "sentinel-2-l2a": "sentinel-2-l2a",
    "sentinel-2-c1-l2a": "sentinel-2-l2a",
    "sentinel-s2-l2a-cogs": "sentinel-2-l2a",
    "landsat-c2-l2": "landsat-c2-l2",
    "landsat-c2l2-sr": "landsat-c2-l2",
    "modis-09A1-061": "modis-09A1-061",
    "modis-09Q1-061": "modis-09Q1-061",
    "modis-13A1-061": "modis-13A1-061",
    "modis-13Q1-061": "modis-13Q1-061",
    "modis-43A4-061": "modis-43A4-061",
}
NOT_SUPPORTED = {"sentinel-1-grd", "sentinel-2-l1c"}  # in the Earth Search searches; no profile on purpose
TM_ETM = ("LT04", "LT05", "LE07")  # Landsat 4-5 TM, 7 ETM+: reflective bands numbered 1-5, 7 (LSDS-1618)


def expected_profile(item: dict) -> str:
    if item["id"].startswith(TM_ETM):
        return "landsat-c2-l2-tm-etm"
    return (
        EXPECTED_PROFILE.get(item.get("collection")) or {"HLS.L30": "hls2-l30", "HLS.S30": "hls2-s30"}[item["id"][:7]]
    )


def _features(doc) -> list[dict]:
    if isinstance(doc, list):
        return [f for f in doc if isinstance(f, dict) and f.get("type") == "Feature"]
    if doc.get("type") == "FeatureCollection":
        return doc["features"]
    return [doc] if doc.get("type") == "Feature" else []


def real_items(shared: Path) -> list[tuple[str, dict]]:
    """(source, item dict) for every item in files, searches and cassette responses."""
    stac = shared / "data/stac"
    out = []
    files = sorted(
        [*stac.rglob("*.json"), *stac.rglob("*.geojson"), *(shared / "data/landsat-c2l2").glob("*/*_stac.json")]
    )
    for path in files:
        out += [(path.name, f) for f in _features(json.loads(path.read_text()))]
    for cassette in sorted((stac / "cassettes").glob("*.yaml")):
        for i, interaction in enumerate(yaml.safe_load(cassette.read_text())["interactions"]):
            body = interaction["response"]["body"].get("string") or ""
            try:
                doc = json.loads(body)
            except (json.JSONDecodeError, TypeError):
                continue
            out += [(f"{cassette.name}#{i}", f) for f in _features(doc)]
    return out


def expected_offset(item: dict, profile_id: str) -> float:
    """DN -> reflectance offset from the product documents and the item's own statements."""
    if profile_id.startswith("landsat-c2-l2"):
        return -0.2  # LSDS-1619 / LSDS-1618 section 4.2
    if profile_id != "sentinel-2-l2a":
        return 0.0  # MODIS, HLS: DN * 1e-4
    p = item["properties"]
    if p.get("earthsearch:boa_offset_applied") is True:
        return 0.0  # DNs already shifted by Earth Search
    if float(p.get("s2:processing_baseline") or 0) >= 4.0:
        return -0.1  # (DN - 1000) / 10000
    return 0.0


EXPECTED_SCALE = {"landsat-c2-l2": 2.75e-5, "landsat-c2-l2-tm-etm": 2.75e-5}


@pytest.fixture(scope="module")
def items(shared_dir) -> list[tuple[str, dict]]:
    found = real_items(shared_dir)
    assert len(found) > 100, "expected the shared STAC material (>100 items)"
    return found


def test_every_real_item_maps_to_its_profile_with_exact_scaling(items):
    checked = {pid: 0 for pid in known_profiles()}
    for source, item in items:
        collection = item.get("collection")
        if collection in NOT_SUPPORTED:
            with pytest.raises(ValueError, match=collection):
                profile_for_item(item)
            continue
        profile = profile_for_item(item)
        assert profile.id == expected_profile(item), (source, item["id"])
        checked[profile.id] += 1
        specs = item_band_specs(item, profile)
        band_assets = [a for a in item["assets"] if a not in ("hdf", "metadata")]
        if not band_assets or set(item["assets"]) <= {"hdf", "metadata", "tilejson", "rendered_preview"}:
            assert specs == [], (source, "HDF-only items have no per-band assets")
            continue
        assert len(specs) >= 2, (source, item["id"])
        assert profile.qa[0].asset in item["assets"], (source, profile.qa[0].asset)
        for spec in specs:
            asset = item["assets"][spec.asset]
            rb = (asset.get("raster:bands") or [{}])[0]
            assert spec.dtype == rb.get("data_type", spec.dtype)
            assert spec.scale == pytest.approx(rb.get("scale", EXPECTED_SCALE.get(profile.id, 1e-4)))
            assert spec.offset == pytest.approx(expected_offset(item, profile.id)), (source, item["id"], spec.asset)
            if "nodata" in rb:
                assert spec.nodata == rb["nodata"]
            for eo in asset.get("eo:bands", [])[:1]:
                if isinstance(eo, dict) and eo.get("center_wavelength"):  # STAC 0.x items list band indices
                    # items round: USGS puts ETM+ SWIR1 (1.55-1.75 um) at 1.6
                    assert spec.center_wavelength_um == pytest.approx(eo["center_wavelength"], abs=0.05), spec.asset
                if isinstance(eo, dict) and eo.get("common_name") and profile.sensor == "landsat":
                    # band numbers differ between OLI and TM/ETM+ (SR_B1: coastal vs blue); Sentinel-2
                    # catalogs disagree on common names (B8A 'rededge' or 'nir08'), so only Landsat is held to them
                    assert spec.common_name == eo["common_name"], (source, spec.asset, eo["common_name"])
    assert all(
        checked[p] > 0
        for p in (
            "sentinel-2-l2a",
            "landsat-c2-l2",
            "modis-09A1-061",
            "hls2-l30",
            "hls2-s30",
            "modis-13Q1-061",
            "modis-43A4-061",
        )
    ), checked


def test_asset_grids_state_the_profile_resolution(items):
    """EPSG and affine of each asset, where the item states them, fit the profile's resolution."""
    n = 0
    for source, item in items:
        if item.get("collection") in NOT_SUPPORTED:
            continue
        profile = profile_for_item(item)
        for spec in item_band_specs(item, profile):
            grid = asset_grid(item, spec.asset)
            epsg = item["assets"][spec.asset].get("proj:epsg", item["properties"].get("proj:epsg"))
            if epsg is not None:
                assert grid.crs == f"EPSG:{epsg}"
            if grid.transform is not None:
                pixel = abs(grid.transform[0])
                tolerance = 0.1 if profile.sensor == "modis" else 1e-9  # MODIS: 463.3 m vs nominal 500 m
                assert pixel == pytest.approx(spec.resolution_m, rel=tolerance), (source, spec.asset, pixel)
                n += 1
    assert n > 500


def test_sentinel2_baseline_rule_on_named_real_items(shared_dir):
    """The four cases of the processing-baseline rule, each on a real item."""
    stac = shared_dir / "data/stac"
    cases = {
        "planetary-computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json": 0.0,  # 02.12
        "planetary-computer/sentinel-2-l2a.S2B_MSIL2A_20250312T014549_R074_T53NKG_20250312T041213.json": -0.1,  # 05.11
        "earth-search/sentinel-2-c1-l2a-S2A_T20HNJ_20240311T140636_L2A.json": -0.1,  # raster:bands offset
    }
    for rel, offset in cases.items():
        item = json.loads((stac / rel).read_text())
        specs = {s.common_name: s for s in item_band_specs(item, load_profile("sentinel-2-l2a"))}
        assert specs["red"].offset == pytest.approx(offset), rel
        assert (specs["red"].offset + 1000 * specs["red"].scale == pytest.approx(0.0)) == (offset != 0.0)
    es = json.loads((stac / "earth-search/search-s2-and-landsat-2023-10-08.json").read_text())["features"]
    s2 = next(f for f in es if f["collection"] == "sentinel-2-l2a")
    assert s2["properties"]["earthsearch:boa_offset_applied"] is True
    assert s2["assets"]["red"]["raster:bands"][0]["offset"] == -0.1  # the catalog's stale statement
    red = {s.common_name: s for s in item_band_specs(s2, load_profile("sentinel-2-l2a"))}["red"]
    assert (red.asset, red.offset) == ("red", 0.0)


def as_stac11_cdse(item: dict, offset: float | None) -> dict:
    """A real Planetary Computer S2 item in the Copernicus Data Space form: STAC 1.1, ``B02_10m`` keys,
    ``bands`` with ``eo:common_name``, ``raster:scale`` / ``raster:offset`` on the asset, and the
    baseline as ``processing:version``."""
    keys = load_profile("sentinel-2-l2a").asset_keys["cdse"]
    assets = {}
    for key, asset in item["assets"].items():
        if key not in keys:
            continue
        eo = (asset.get("eo:bands") or [{}])[0]
        new = {k: v for k, v in asset.items() if k != "eo:bands"}
        new |= {
            "data_type": "uint8" if key == "SCL" else "uint16",
            "nodata": 0,
            "bands": [{"name": key, **({"eo:common_name": eo["common_name"]} if "common_name" in eo else {})}],
        }
        if key != "SCL":
            new |= {"raster:scale": 0.0001, **({"raster:offset": offset} if offset is not None else {})}
        assets[keys[key]] = new
    props = {k: v for k, v in item["properties"].items() if k != "s2:processing_baseline"}
    props["processing:version"] = item["properties"]["s2:processing_baseline"]
    return dict(item, stac_version="1.1.0", properties=props, assets=assets)


def test_copernicus_data_space_items_in_stac_11(shared_dir):
    """Resolution-suffixed keys, STAC 1.1 raster fields and ``processing:version`` give the same bands as PC's."""
    pc = json.loads(
        (
            shared_dir / "data/stac/planetary-computer/"
            "sentinel-2-l2a.S2B_MSIL2A_20250312T014549_R074_T53NKG_20250312T041213.json"
        ).read_text()
    )
    reference = {b.common_name: b for b in item_band_specs(pc, profile_for_item(pc))}  # baseline 05.11: -0.1
    for offset in (-0.1, None):  # stated on the asset, or left to the baseline rule
        cdse = as_stac11_cdse(pc, offset)
        profile = profile_for_item(cdse)
        assert (profile.band("blue").asset, profile.band("nir08").asset, profile.qa[0].asset) == (
            "B02_10m",
            "B8A_20m",
            "SCL_20m",
        )
        specs = {b.common_name: b for b in item_band_specs(cdse, profile)}
        assert set(specs) == set(reference)
        for name, spec in specs.items():
            assert (spec.scale, spec.offset, spec.nodata, spec.dtype) == pytest.approx(
                (reference[name].scale, -0.1, 0, "uint16")
            ), name
    old = dict(cdse, properties={**cdse["properties"], "processing:version": "02.12"})
    assert {b.offset for b in item_band_specs(old, profile)} == {0.0}


def with_numbered_keys(item: dict) -> dict:
    """A Landsat item with the early USGS asset keys: ``SR_B<n>.TIF`` by the band numbers its ``eo:bands`` state."""
    numbered = {
        f"SR_{a['eo:bands'][0]['name']}.TIF": a
        for k, a in item["assets"].items()
        if a.get("eo:bands") and k not in ("qa_pixel", "qa_radsat")
    }
    return dict(item, assets={**numbered, "QA_PIXEL.TIF": item["assets"]["qa_pixel"]})


def test_landsat_band_numbers_follow_the_instrument(shared_dir):
    """SR_B1 is coastal on OLI and blue on TM/ETM+ (LSDS-1619 / LSDS-1618 band lists).

    The real LC08 scene item uses the early USGS keys (``SR_B1.TIF`` ...); the real LE07 item is
    given the same key scheme (its assets renamed by the ETM+ band numbers its ``eo:bands`` state).
    """
    oli = json.loads(next((shared_dir / "data/landsat-c2l2/LC08_L2SP_005009_20150710").glob("*_stac.json")).read_text())
    etm = json.loads((shared_dir / "data/stac/usgs/LE07_L2SP_044033_20210329_20210424_02_T1_SR.json").read_text())
    etm_2020 = with_numbered_keys(etm)
    assert profile_for_item(oli).band("coastal").asset == "SR_B1.TIF"
    profile = profile_for_item(etm_2020)
    assert profile.id == "landsat-c2-l2-tm-etm"
    assert {b.common_name: b.asset for b in profile.bands} == {
        "blue": "SR_B1.TIF",
        "green": "SR_B2.TIF",
        "red": "SR_B3.TIF",
        "nir08": "SR_B4.TIF",
        "swir16": "SR_B5.TIF",
        "swir22": "SR_B7.TIF",
    }
    assert profile.qa[0].asset == "QA_PIXEL.TIF"
    renamed = dict(etm, id="scene-0001")  # no id prefix: the platform (LANDSAT_7) decides
    assert profile_for_item(renamed).id == "landsat-c2-l2-tm-etm"
    unknown = dict(renamed, properties={k: v for k, v in etm["properties"].items() if k != "platform"})
    with pytest.raises(ValueError, match="cannot tell which of"):
        profile_for_item(unknown)
    assert profile_for_collection("landsat-c2-l2").id == "landsat-c2-l2"  # the collection as a whole: OLI


def test_a_search_mixing_landsat_instruments_reads_with_one_table_or_says_why_not(shared_dir):
    """Real USGS items of ETM+ and OLI: common-name keys agree, so one read serves both; band numbers do not."""
    import pystac

    from pipeline.catalog.search import SensorItems
    from pipeline.cube.load import items_profile

    usgs = shared_dir / "data/stac/usgs"
    etm = json.loads((usgs / "LE07_L2SP_044033_20210329_20210424_02_T1_SR.json").read_text())
    oli = json.loads((usgs / "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json").read_text())
    mixed = SensorItems("landsat", "landsat-c2l2-sr", "landsat-c2-l2", [pystac.Item.from_dict(d) for d in (etm, oli)])
    assert items_profile(mixed, ["blue", "red", "nir08"]).band("red").asset == "red"
    assert items_profile(mixed, ["coastal", "blue"]).id == "landsat-c2-l2"  # the profile that has every band
    scene = json.loads(
        next((shared_dir / "data/landsat-c2l2/LC08_L2SP_005009_20150710").glob("*_stac.json")).read_text()
    )
    etm_2020 = with_numbered_keys(etm)
    numbered_items = SensorItems(
        "landsat", "landsat-c2l2-sr", "landsat-c2-l2", [pystac.Item.from_dict(d) for d in (etm_2020, scene)]
    )
    with pytest.raises(ValueError, match="mix products.*keyed differently"):
        items_profile(numbered_items, ["blue", "red"])


def test_asset_key_overrides_and_schemes():
    pc = profile_for_collection("sentinel-2-l2a")
    es = profile_for_collection("sentinel-2-c1-l2a")
    assert (pc.band("blue").asset, pc.qa[0].asset) == ("B02", "SCL")
    assert (es.band("blue").asset, es.qa[0].asset) == ("blue", "scl")
    custom = profile_for_collection("landsat-c2-l2", asset_keys={"qa_pixel": "QA_PIXEL", "red": "SR_B4"})
    assert (custom.qa[0].asset, custom.band("red").asset, custom.band("blue").asset) == ("QA_PIXEL", "SR_B4", "blue")
    with pytest.raises(ValueError, match="unknown asset keys"):
        profile_for_collection("landsat-c2-l2", asset_keys={"B99": "x"})
    with pytest.raises(ValueError, match="no sensor profile for collection 'sentinel-3-olci'.*landsat-c2-l2"):
        profile_for_collection("sentinel-3-olci")
    with pytest.raises(ValueError, match="mixes profiles"):
        profile_for_collection("hls")
    with pytest.raises(KeyError, match="available"):
        pc.band("thermal")
    with pytest.raises(ValueError, match="known"):
        load_profile("sentinel-9")


def test_catalog_yamls_agree_with_the_collection_table():
    """Each catalog's collection resolves to a profile through the one collection table (a profile a
    catalog names explicitly agrees with it), and that profile loads."""
    root = Path(__file__).resolve().parents[1] / "catalogs"
    n = 0
    for path in sorted(root.glob("*.yaml")):
        for sensor, ref in yaml.safe_load(path.read_text())["collections"].items():
            profile = profile_for_collection(ref["collection"])
            assert ref.get("profile", profile.id) == profile.id, (path.name, sensor)
            assert load_profile(profile.id).bands, (path.name, sensor)
            n += 1
    assert n >= 10
