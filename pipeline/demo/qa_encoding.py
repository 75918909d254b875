"""Encode the generator's truth into each product's QA band, as the real product does.

These are written independently of :mod:`pipeline.sensors` (the decoders) so that the
tests scoring the masks compare two separate readings of the product guides.

References
----------
* Sentinel-2 L2A Scene Classification (SCL) values: Sentinel-2 L2A Product
  Specification / Level-2A ATBD, SCL class table (0 no data … 11 snow).
* Landsat Collection 2 Level-2 ``QA_PIXEL``: LSDS-1619 (Landsat 8-9 C2 L2 Science
  Product Guide), Table 6-3 (bit 0 fill … bits 14-15 cirrus confidence).
* MODIS MOD09A1 ``sur_refl_state_500m``: MOD09 User's Guide (Collection 6.1),
  "500 m, 1 km and coarse resolution state QA descriptions" table.
"""

from __future__ import annotations

import numpy as np

from pipeline.demo.landscape import (
    OPAQUE_THICKNESS,
    TRUTH_CIRRUS,
    TRUTH_CLOUD,
    TRUTH_NODATA,
    TRUTH_SHADOW,
    TRUTH_SNOW,
    TRUTH_WATER,
)


def encode_s2_scl(truth: np.ndarray, thickness: np.ndarray, vegetated: np.ndarray) -> np.ndarray:
    """SCL classes (uint8) from truth: 9/8 opaque/edge cloud, 3 shadow, 10 cirrus, 11 snow, 6 water."""
    scl = np.where(vegetated, 4, 5).astype(np.uint8)
    scl[truth == TRUTH_WATER] = 6
    scl[truth == TRUTH_SNOW] = 11
    scl[truth == TRUTH_CIRRUS] = 10
    scl[truth == TRUTH_SHADOW] = 3
    cloud = truth == TRUTH_CLOUD
    scl[cloud] = np.where(thickness[cloud] > OPAQUE_THICKNESS, 9, 8)
    scl[truth == TRUTH_NODATA] = 0
    return scl


def _bits(**fields: int) -> int:
    """Compose a QA_PIXEL value from named fields (LSDS-1619 Table 6-3)."""
    layout = {
        "fill": 0,
        "dilated": 1,
        "cirrus": 2,
        "cloud": 3,
        "shadow": 4,
        "snow": 5,
        "clear": 6,
        "water": 7,
        "cloud_conf": 8,
        "shadow_conf": 10,
        "snow_conf": 12,
        "cirrus_conf": 14,
    }
    return sum(v << layout[k] for k, v in fields.items())


# Confidence fields: 0 none, 1 low, 2 medium, 3 high.
_LOW = dict(cloud_conf=1, shadow_conf=1, snow_conf=1, cirrus_conf=1)
QA_PIXEL_CLEAR_LAND = _bits(clear=1, **_LOW)  # 21824
QA_PIXEL_CLEAR_WATER = _bits(clear=1, water=1, **_LOW)  # 21952
QA_PIXEL_SNOW = _bits(clear=1, snow=1, **{**_LOW, "snow_conf": 3})  # 30048
QA_PIXEL_SHADOW = _bits(clear=1, shadow=1, **{**_LOW, "shadow_conf": 3})  # 23888
QA_PIXEL_CIRRUS = _bits(clear=1, cirrus=1, **{**_LOW, "cirrus_conf": 3})  # 54596 with clear bit
QA_PIXEL_CLOUD_HIGH = _bits(cloud=1, **{**_LOW, "cloud_conf": 3})  # 22280
QA_PIXEL_CLOUD_MEDIUM = _bits(dilated=1, **{**_LOW, "cloud_conf": 2})  # edge: dilated, medium confidence
QA_PIXEL_FILL = _bits(fill=1)  # 1


def encode_landsat_qa_pixel(truth: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Landsat C2 L2 ``QA_PIXEL`` (uint16) from truth.

    Opaque cloud sets the cloud bit with high confidence; thinner cloud (the cloud's
    edge) is flagged as dilated cloud with medium confidence, as the C2 CFMask output does.
    """
    qa = np.full(truth.shape, QA_PIXEL_CLEAR_LAND, dtype=np.uint16)
    qa[truth == TRUTH_WATER] = QA_PIXEL_CLEAR_WATER
    qa[truth == TRUTH_SNOW] = QA_PIXEL_SNOW
    qa[truth == TRUTH_CIRRUS] = QA_PIXEL_CIRRUS
    qa[truth == TRUTH_SHADOW] = QA_PIXEL_SHADOW
    cloud = truth == TRUTH_CLOUD
    qa[cloud] = np.where(thickness[cloud] > OPAQUE_THICKNESS, QA_PIXEL_CLOUD_HIGH, QA_PIXEL_CLOUD_MEDIUM)
    qa[truth == TRUTH_NODATA] = QA_PIXEL_FILL
    return qa


def encode_modis_state_500m(truth: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """MOD09A1 ``sur_refl_state_500m`` (uint16) from truth.

    Bits 0-1 cloud state (0 clear, 1 cloudy, 2 mixed), 2 cloud shadow, 3-5 land/water
    (1 land, 3 shallow inland water), 6-7 aerosol quantity (1 low), 8-9 cirrus
    (0 none, 2 average), 10 internal cloud flag, 12 MOD35 snow/ice, 13 adjacent to
    cloud, 15 internal snow mask.
    """
    land, inland_water, aerosol_low = 1 << 3, 3 << 3, 1 << 6
    state = np.full(truth.shape, land | aerosol_low, dtype=np.uint16)
    state[truth == TRUTH_WATER] = inland_water | aerosol_low
    state[truth == TRUTH_SNOW] = land | aerosol_low | (1 << 12) | (1 << 15)
    state[truth == TRUTH_CIRRUS] = land | aerosol_low | (2 << 8)
    state[truth == TRUTH_SHADOW] = land | aerosol_low | (1 << 2)
    cloud = truth == TRUTH_CLOUD
    opaque = thickness[cloud] > OPAQUE_THICKNESS
    state[cloud] = np.where(opaque, land | 1 | (1 << 10), land | 2 | (1 << 10))
    return state
