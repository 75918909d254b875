"""QA bit rules against values worked out by hand from the product guides.

Each test names the guide and table the expected values were read from. Expected flags
are written out literally (not computed with the decoder's own tables); the real items'
``classification:bitfields`` and the MODIS granule's own ``QA index`` attribute give a
second, independent reading of the same layouts.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pipeline.sensors import decode_qa, qa_rules


def _decode_one(collection: str, asset: str, value: int, dtype: str) -> dict[str, int]:
    ds = decode_qa(collection, asset, np.array([value], dtype=dtype))
    return {name: int(ds[name].values[0]) for name in ds.data_vars}


def _set_flags(decoded: dict[str, int], rule: str) -> set[str]:
    return {n for n in qa_rules()[rule].flags if decoded[n]}


# ---------------------------------------------------------------- Landsat C2 L2 QA_PIXEL
# USGS LSDS-1619 (Landsat 8-9 C2 L2 Science Product Guide), Table 6-3: bit 0 fill, 1 dilated
# cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water, 8-9 cloud confidence,
# 10-11 cloud shadow confidence, 12-13 snow/ice confidence, 14-15 cirrus confidence.
# Values below are written in binary by hand (bit 15 ... bit 0).
QA_PIXEL_CASES = {
    # value: (flags set, (cloud, shadow, snow, cirrus) confidence)
    1: ({"fill"}, (0, 0, 0, 0)),
    0b0101_0101_0100_0000: ({"clear"}, (1, 1, 1, 1)),  # 21824 clear land
    0b0101_0101_1100_0000: ({"clear", "water"}, (1, 1, 1, 1)),  # 21952 clear water
    0b0101_0111_0000_1000: ({"cloud"}, (3, 1, 1, 1)),  # 22280 high-confidence cloud
    0b0101_1101_0101_0000: ({"cloud_shadow", "clear"}, (1, 3, 1, 1)),  # 23888 shadow
    0b0111_0101_0110_0000: ({"snow", "clear"}, (1, 1, 3, 1)),  # 30048 snow
    0b1101_0101_0100_0100: ({"cirrus", "clear"}, (1, 1, 1, 3)),  # 54596 cirrus
    0b1101_0111_0000_1100: ({"cloud", "cirrus"}, (3, 1, 1, 3)),  # 55052 cloud + cirrus
    0b0101_1110_0001_0010: ({"dilated_cloud", "cloud_shadow"}, (2, 3, 1, 1)),  # 24082, in the real scene
}


@pytest.mark.parametrize("value", sorted(QA_PIXEL_CASES))
def test_landsat_qa_pixel_bits(value: int):
    flags, conf = QA_PIXEL_CASES[value]
    d = _decode_one("landsat-c2-l2", "qa_pixel", value, "uint16")
    assert _set_flags(d, "landsat_c2_qa_pixel") == flags
    assert (d["cloud_confidence"], d["cloud_shadow_confidence"], d["snow_confidence"], d["cirrus_confidence"]) == conf


# ---------------------------------------------------------------- Landsat QA_RADSAT
# LSDS-1619 Table 6-4: bits 0-6 bands 1-7 saturated, bit 8 band 9, bit 11 terrain occlusion;
# LSDS-1618 (Landsat 4-7): bit 9 dropped pixel.
@pytest.mark.parametrize(
    "value,flags",
    [
        (0, set()),
        (0b1000_0000_0101, {"saturated", "saturated_band1", "saturated_band3", "terrain_occlusion"}),
        (0b0001_0000_0000, {"saturated_band9"}),  # cirrus band only: SR bands fine
        (0b0000_0100_0000, {"saturated", "saturated_band7"}),
        (0b0010_0000_0000, {"dropped_pixel"}),
    ],
)
def test_landsat_qa_radsat_bits(value: int, flags: set[str]):
    d = _decode_one("landsat-c2-l2", "qa_radsat", value, "uint16")
    assert _set_flags(d, "landsat_c2_qa_radsat") == flags


# ---------------------------------------------------------------- Sentinel-2 SCL
# ESA S2 L2A ATBD, SCL: 0 no data, 1 saturated/defective, 2 dark area, 3 cloud shadow,
# 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium probability,
# 9 cloud high probability, 10 thin cirrus, 11 snow/ice.
SCL_CLASSES = {
    0: "nodata",
    1: "saturated",
    2: "dark_area",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium",
    9: "cloud_high",
    10: "cirrus",
    11: "snow",
}


@pytest.mark.parametrize("value", range(12))
def test_s2_scl_classes(value: int):
    d = _decode_one("sentinel-2-l2a", "SCL", value, "uint8")
    derived = {8: {"cloud"}, 9: {"cloud"}, 4: {"clear"}, 5: {"clear"}, 6: {"clear"}}.get(value, set())
    assert _set_flags(d, "s2_scl") == {SCL_CLASSES[value]} | derived


# ---------------------------------------------------------------- HLS v2.0 Fmask
# HLS v2.0 User Guide, Table 9: bit 0 cirrus (reserved), 1 cloud, 2 adjacent to cloud/shadow,
# 3 cloud shadow, 4 snow/ice, 5 water, 6-7 aerosol level (0 climatology, 1 low, 2 moderate,
# 3 high); 255 fill.
@pytest.mark.parametrize(
    "value,flags,aerosol",
    [
        (255, {"fill"}, 0),
        (0b0100_0010, {"cloud"}, 1),
        (0b1100_1000, {"cloud_shadow", "aerosol_high"}, 3),
        (0b0010_0100, {"water", "adjacent_to_cloud"}, 0),
        (0b1001_0000, {"snow"}, 2),
        (0b0000_0001, {"cirrus"}, 0),
    ],
)
def test_hls_fmask_bits(value: int, flags: set[str], aerosol: int):
    for collection in ("HLSL30_2.0", "hls2-s30"):
        d = _decode_one(collection, "Fmask", value, "uint8")
        assert _set_flags(d, "hls_fmask") == flags
        assert d["aerosol_level"] == aerosol


# ---------------------------------------------------------------- MODIS state QA
# MODIS Surface Reflectance User's Guide C6.1, 500 m state QA (MOD09A1 sur_refl_state_500m):
# bits 0-1 cloud state (00 clear, 01 cloudy, 10 mixed, 11 not set = assumed clear), 2 cloud
# shadow, 3-5 land/water (001 land, 010 coastline; the other six classes are water), 6-7
# aerosol quantity, 8-9 cirrus (00 none, 01 small, 10 average, 11 high), 10 internal cloud,
# 11 internal fire, 12 MOD35 snow/ice, 13 adjacent to cloud, 14 BRDF corrected (500 m) /
# salt pan (1 km state_1km), 15 internal snow mask.
LAND = 0b001 << 3
MODIS_CASES = [
    (LAND, set(), {"cloud_state": 0, "land_water": 1}),
    (LAND | 0b01, {"cloud"}, {"cloud_state": 1}),
    (LAND | 0b10, {"cloud_mixed"}, {"cloud_state": 2}),
    (LAND | 0b11, set(), {"cloud_state": 3}),  # not set, assumed clear
    (0b000 << 3, {"water"}, {"land_water": 0}),  # shallow ocean
    (0b010 << 3, set(), {"land_water": 2}),  # coastline: not water
    (0b011 << 3, {"water"}, {"land_water": 3}),  # shallow inland water
    (LAND | 0b100, {"cloud_shadow"}, {}),
    (LAND | 0b11 << 6, {"aerosol_high"}, {"aerosol_level": 3}),
    (LAND | 0b01 << 8, set(), {"cirrus_level": 1}),  # small cirrus: kept
    (LAND | 0b10 << 8, {"cirrus"}, {"cirrus_level": 2}),
    (LAND | 1 << 10, {"internal_cloud"}, {}),
    (LAND | 1 << 11, {"fire"}, {}),
    (LAND | 1 << 12, {"snow"}, {}),
    (LAND | 1 << 13, {"adjacent_to_cloud"}, {}),
    (LAND | 1 << 15, {"internal_snow"}, {}),
    (65535, {"fill"}, {"cloud_state": 0, "land_water": 0}),
]


@pytest.mark.parametrize("value,flags,levels", MODIS_CASES)
def test_modis_state_500m_bits(value: int, flags: set[str], levels: dict[str, int]):
    d = _decode_one("modis-09A1-061", "sur_refl_state_500m", value, "uint16")
    assert _set_flags(d, "modis_state_500m") == flags
    assert {k: d[k] for k in levels} == levels


def test_modis_bit_14_differs_between_500m_and_1km_state():
    v = LAND | 1 << 14
    assert _set_flags(_decode_one("MOD09A1_061", "sur_refl_state_500m", v, "uint16"), "modis_state_500m") == {
        "brdf_corrected"
    }
    assert _set_flags(_decode_one("MOD09GA_061", "state_1km", v, "uint16"), "modis_state_1km") == {"salt_pan"}


# ---------------------------------------------------------------- MOD13 VI quality
# MODIS VI User's Guide C6.1, Table 4 (pixel reliability: -1 fill, 0 good, 1 marginal,
# 2 snow/ice, 3 cloudy) and Table 5 (VI Quality: 0-1 MODLAND QA, 2-5 usefulness, 6-7
# aerosol, 8 adjacent cloud, 9 atmosphere BRDF, 10 mixed clouds, 11-13 land/water,
# 14 possible snow/ice, 15 possible shadow).
@pytest.mark.parametrize("value,flag", [(-1, "fill"), (0, "good"), (1, "marginal"), (2, "snow"), (3, "cloud")])
def test_mod13_pixel_reliability(value: int, flag: str):
    d = _decode_one("modis-13Q1-061", "250m_16_days_pixel_reliability", value, "int8")
    assert _set_flags(d, "mod13_pixel_reliability") == {flag}


def test_mod13_hdf4_dataset_names_are_accepted():
    """MOD13Q1/A1 HDF4 files name their datasets with spaces (``250m 16 days pixel reliability``)."""
    for name in ("250m 16 days pixel reliability", "250M_16_DAYS_PIXEL_RELIABILITY"):
        d = _decode_one("MOD13Q1_061", name, 3, "int8")
        assert _set_flags(d, "mod13_pixel_reliability") == {"cloud"}
    d = _decode_one("MOD13A1_061", "500m 16 days VI Quality", 0b0000_1000_0000_0010, "uint16")
    assert _set_flags(d, "mod13_vi_quality") == {"cloud"}


@pytest.mark.parametrize(
    "value,flags,levels",
    [
        (0b0000_1000_0100_0100, set(), {"modland_qa": 0, "usefulness": 1, "aerosol_level": 1, "land_water": 1}),
        (0b0000_1000_0000_0010, {"cloud"}, {"modland_qa": 2}),
        (0b0000_1000_0000_0011, {"not_produced"}, {"modland_qa": 3}),
        (0b0000_1001_0000_0000, {"adjacent_to_cloud"}, {}),
        (0b0000_1010_0000_0000, {"brdf_corrected"}, {}),
        (0b0000_1100_0000_0000, {"cloud_mixed"}, {}),
        (0b0100_1000_0000_0000, {"snow"}, {}),
        (0b1000_1000_0000_0000, {"cloud_shadow"}, {}),
        (0b0001_0000_0000_0000, set(), {"land_water": 2}),  # coastline: not water
        (0b0010_1000_0000_0000, {"water"}, {"land_water": 5}),  # deep inland water
        (0b0000_1000_0011_1100, set(), {"usefulness": 15}),
        (65535, {"fill"}, {"modland_qa": 0}),
    ],
)
def test_mod13_vi_quality_bits(value: int, flags: set[str], levels: dict[str, int]):
    d = _decode_one("modis-13Q1-061", "250m_16_days_VI_Quality", value, "uint16")
    assert {k: d[k] for k in levels} == levels
    assert _set_flags(d, "mod13_vi_quality") == flags


# ---------------------------------------------------------------- MCD43 mandatory quality
@pytest.mark.parametrize("value,flag", [(0, "full_inversion"), (1, "magnitude_inversion"), (255, "fill")])
def test_mcd43_mandatory_quality(value: int, flag: str):
    d = _decode_one("modis-43A4-061", "BRDF_Albedo_Band_Mandatory_Quality_Band3", value, "uint8")
    assert _set_flags(d, "mcd43_mandatory_quality") == {flag}


# ---------------------------------------------------------------- independent readings in real metadata
def _field(rule: str, name: str) -> tuple[int, int]:
    r = qa_rules()[rule]
    spec = r.flags.get(name) or r.levels[name]
    return (spec.bits, 1) if isinstance(spec.bits, int) else tuple(spec.bits)


@pytest.mark.parametrize(
    "path,asset,rule,names",
    [
        (
            "data/stac/planetary-computer/landsat-c2-l2.LC09_L2SP_090091_20250310_02_T1.json",
            "qa_pixel",
            "landsat_c2_qa_pixel",
            {},
        ),
        (
            "data/stac/planetary-computer/landsat-c2-l2.LC09_L2SP_090091_20250310_02_T1.json",
            "qa_radsat",
            "landsat_c2_qa_radsat",
            {**{f"band{i}": f"saturated_band{i}" for i in range(1, 10)}, "occlusion": "terrain_occlusion"},
        ),
        (
            "data/stac/stactools/hls/HLS.L30.T19LDD.2022165T144027.v2.0/HLS.L30.T19LDD.2022165T144027.v2.0.json",
            "fmask",
            "hls_fmask",
            {"adjacent": "adjacent_to_cloud", "snow_ice": "snow"},
        ),
    ],
)
def test_rules_agree_with_the_items_classification_bitfields(shared_dir, path, asset, rule, names):
    """The catalogs' own ``classification:bitfields`` give every field the same bits as our rules."""
    item = json.loads((shared_dir / path).read_text())
    fields = item["assets"][asset]["classification:bitfields"]
    assert len(fields) >= 6
    for f in fields:
        assert _field(rule, names.get(f["name"], f["name"])) == (f["offset"], f["length"]), f["name"]


MODIS_QA_INDEX_NAMES = {
    "internal snow algorithm flag": "internal_snow",
    "Salt Pan": "salt_pan",
    "Pixel is adjacent to cloud": "adjacent_to_cloud",
    "MOD35 snow/ice flag": "snow",
    "internal fire algorithm flag": "fire",
    "internal cloud algorithm flag": "internal_cloud",
    "cirrus detected": "cirrus_level",
    "aerosol quantity": "aerosol_level",
    "land/water flag": "land_water",
    "cloud shadow": "cloud_shadow",
    "cloud state": "cloud_state",
}


def parse_modis_qa_index(text: str) -> dict[str, tuple[tuple[int, int], dict[int, float]]]:
    """``QA index`` attribute of a MOD09GA SDS -> {description: ((offset, length), {class value: percent})}."""
    out: dict[str, tuple[tuple[int, int], dict[int, float]]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"\s*(\d+)(?:-(\d+))?\s+([^;]+);", line)
        cls = re.match(r"\s*([01]+)\s+--\s+[^,]*,\s*([\d.]+)%", line)
        if head:
            lo, hi = int(head.group(1)), int(head.group(2) or head.group(1))
            current = head.group(3).strip()
            out[current] = ((lo, hi - lo + 1), {})
        elif cls and current:
            out[current][1][int(cls.group(1), 2)] = float(cls.group(2))
    return out


def test_modis_state_1km_layout_matches_the_granules_own_qa_index(shared_dir):
    """MOD09GA's ``state_1km_1`` carries its bit layout and class percentages in ``QA index``."""
    from pyhdf.SD import SD, SDC

    path = next((shared_dir / "data/modis").glob("MOD09GA*.hdf"))
    sds = SD(str(path), SDC.READ).select("state_1km_1")
    index = parse_modis_qa_index(sds.attributes()["QA index"])
    assert set(index) == set(MODIS_QA_INDEX_NAMES)
    for desc, ((offset, length), _) in index.items():
        assert _field("modis_state_1km", MODIS_QA_INDEX_NAMES[desc]) == (offset, length), desc
    # the producer's class percentages (over the granule's valid pixels; its exact population
    # is not documented) agree with our decoding of the first layer within 1 percentage point
    flags = decode_qa("MOD09GA_061", "state_1km_1", sds.get())
    valid = ~flags["fill"].values
    for desc, (_, classes) in index.items():
        name = MODIS_QA_INDEX_NAMES[desc]
        values = flags[name].values[valid] if name in flags else None
        assert values is not None, name
        for cls, pct in classes.items():
            ours = 100 * np.mean(values == cls)
            assert ours == pytest.approx(pct, abs=1.0), (desc, cls, ours, pct)
