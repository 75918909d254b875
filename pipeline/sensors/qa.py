"""Decode product QA bands into boolean flags, and flags into an invalid mask.

Every rule is a table (bit fields or class values) taken from the product guide cited
beside it; decoding is vectorised bit arithmetic that works on numpy arrays, xarray
DataArrays and lazy dask-backed DataArrays alike.

* Landsat C2 L2 ``QA_PIXEL`` / ``QA_RADSAT``: LSDS-1619, Landsat 8-9 Collection 2
  Level-2 Science Product Guide, Table 6-3 (QA_PIXEL) and Table 6-4 (QA_RADSAT).
* Sentinel-2 L2A ``SCL``: Sentinel-2 L2A Product Format Specification / ATBD,
  Scene Classification values 0-11.
* HLS v2.0 ``Fmask``: HLS v2.0 User Guide, Table 9.
* MODIS MOD09A1 ``sur_refl_state_500m`` and MOD09GA ``state_1km``: MOD09 User's Guide
  C6.1, Table 13 (state QA); MOD13Q1 ``pixel_reliability`` and ``VI_Quality``: MOD13
  User's Guide C6.1, Tables 4-5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Bits:
    """A bit field: ``(value >> offset) & (2**length - 1)``."""

    offset: int
    length: int = 1

    def read(self, a):
        return (a >> self.offset) & ((1 << self.length) - 1)


# flag name -> (field, predicate on the field value)
_QA_PIXEL = {
    "fill": (Bits(0), lambda v: v == 1),
    "dilated_cloud": (Bits(1), lambda v: v == 1),
    "cirrus": (Bits(2), lambda v: v == 1),
    "cloud": (Bits(3), lambda v: v == 1),
    "cloud_shadow": (Bits(4), lambda v: v == 1),
    "snow": (Bits(5), lambda v: v == 1),
    "clear": (Bits(6), lambda v: v == 1),
    "water": (Bits(7), lambda v: v == 1),
}
_QA_PIXEL_CONFIDENCE = {
    "cloud_confidence": Bits(8, 2), "cloud_shadow_confidence": Bits(10, 2),
    "snow_confidence": Bits(12, 2), "cirrus_confidence": Bits(14, 2),
}
_QA_RADSAT = {**{f"saturated_band{b}": (Bits(b - 1), lambda v: v == 1) for b in range(1, 10)},
              "terrain_occlusion": (Bits(11), lambda v: v == 1)}
_QA_RADSAT["saturated"] = (Bits(0, 9), lambda v: v != 0)

_SCL_CLASSES = {
    "nodata": (0,), "saturated": (1,), "dark_area": (2,), "cloud_shadow": (3,), "vegetation": (4,),
    "not_vegetated": (5,), "water": (6,), "unclassified": (7,), "cloud_medium": (8,), "cloud_high": (9,),
    "cirrus": (10,), "snow": (11,),
}

_FMASK = {
    "cirrus": (Bits(0), lambda v: v == 1),
    "cloud": (Bits(1), lambda v: v == 1),
    "adjacent_to_cloud": (Bits(2), lambda v: v == 1),
    "cloud_shadow": (Bits(3), lambda v: v == 1),
    "snow": (Bits(4), lambda v: v == 1),
    "water": (Bits(5), lambda v: v == 1),
}

_MODIS_STATE = {
    "cloud": (Bits(0, 2), lambda v: v == 1),
    "cloud_mixed": (Bits(0, 2), lambda v: v == 2),
    "cloud_shadow": (Bits(2), lambda v: v == 1),
    # land/water: 0 shallow ocean, 1 land, 2 coastline/lake shore, 3 shallow inland water,
    # 4 ephemeral water, 5 deep inland water, 6 moderate ocean, 7 deep ocean
    "water": (Bits(3, 3), lambda v: (v != 1) & (v != 2)),
    "cirrus": (Bits(8, 2), lambda v: v >= 2),  # 0 none, 1 small, 2 average, 3 high
    "internal_cloud": (Bits(10), lambda v: v == 1),
    "fire": (Bits(11), lambda v: v == 1),
    "snow": (Bits(12), lambda v: v == 1),
    "adjacent_to_cloud": (Bits(13), lambda v: v == 1),
    "internal_snow": (Bits(15), lambda v: v == 1),
}

_MOD13_RELIABILITY = {"fill": (-1,), "good": (0,), "marginal": (1,), "snow": (2,), "cloud": (3,)}


def _bitfield_rule(table, confidences=None, fill_value=None):
    def decode(a):
        flags = {name: pred(field.read(a)) for name, (field, pred) in table.items()}
        if fill_value is not None:
            flags["fill"] = a == fill_value
        for name, field in (confidences or {}).items():
            flags[name] = field.read(a)
        return flags
    return decode


def _class_rule(table):
    def decode(a):
        return {name: _isin(a, values) for name, values in table.items()}
    return decode


def _isin(a, values):
    out = a == values[0]
    for v in values[1:]:
        out = out | (a == v)
    return out


def _scl_decode(a):
    flags = _class_rule(_SCL_CLASSES)(a)
    flags["cloud"] = flags["cloud_medium"] | flags["cloud_high"]
    flags["fill"] = flags["nodata"]
    return flags


def _modis_decode(a):
    flags = _bitfield_rule(_MODIS_STATE)(a)
    flags["fill"] = a == 65535
    return flags


RULES = {
    "landsat_c2_qa_pixel": _bitfield_rule(_QA_PIXEL, _QA_PIXEL_CONFIDENCE),
    "landsat_c2_qa_radsat": _bitfield_rule(_QA_RADSAT),
    "s2_scl": _scl_decode,
    "hls_fmask": _bitfield_rule(_FMASK, {"aerosol_level": Bits(6, 2)}, fill_value=255),
    "modis_state_500m": _modis_decode,
    "modis_state_1km": _modis_decode,
    "mod13_pixel_reliability": _class_rule(_MOD13_RELIABILITY),
}

#: Landsat 2-bit confidence levels (LSDS-1619 Table 6-3).
CONFIDENCE_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}


class MaskPolicy(BaseModel):
    """Which QA flags make a pixel invalid.

    ``drop`` names flags (as :func:`decode_qa` returns them) that remove a pixel; flags
    a product does not have are ignored. Snow and water are kept by default.
    ``min_cloud_confidence`` additionally drops Landsat pixels whose 2-bit cloud
    confidence is at or above that level (``"high"`` = only the cloud bit decides;
    ``"medium"`` also drops medium-confidence pixels). ``dilation_m`` buffers the
    dropped pixels by that many metres.
    """

    model_config = ConfigDict(extra="forbid")

    drop: list[str] = Field(default_factory=lambda: [
        "fill", "nodata", "saturated", "cloud", "cloud_medium", "cloud_high", "dilated_cloud", "cloud_shadow",
        "cirrus", "cloud_mixed", "internal_cloud",
    ])
    min_cloud_confidence: str = Field("high", pattern="^(none|low|medium|high)$")
    dilation_m: float = Field(0.0, ge=0.0)


def _wrap(a):
    return a if isinstance(a, xr.DataArray) else xr.DataArray(np.asarray(a))


def _rule_for(collection: str, asset: str):
    from pipeline.sensors.profiles import profile_for_collection

    spec = profile_for_collection(collection).qa_spec(asset)
    return RULES[spec.rule]


def decode_qa(collection: str, asset: str, array) -> xr.Dataset:
    """Boolean flags (and small-int confidence fields) of a QA array, same dims/coords."""
    a = _wrap(array)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"QA array for {collection}/{asset} must be integer, not {a.dtype}")
    flags = _rule_for(collection, asset)(a)
    return xr.Dataset(flags)


def _dilate(mask: xr.DataArray, pixels: int) -> xr.DataArray:
    from scipy.ndimage import binary_dilation

    yy, xx = np.mgrid[-pixels:pixels + 1, -pixels:pixels + 1]
    disk = (yy ** 2 + xx ** 2) <= pixels ** 2
    ydim, xdim = mask.dims[-2], mask.dims[-1]

    def dilate_block(block: np.ndarray) -> np.ndarray:
        structure = disk.reshape((1,) * (block.ndim - 2) + disk.shape)
        return binary_dilation(block, structure=structure)

    if mask.chunks is not None:
        import dask.array as da

        data = da.map_overlap(dilate_block, mask.data, depth={mask.ndim - 2: pixels, mask.ndim - 1: pixels},
                              boundary=False, dtype=bool)
        return mask.copy(data=data)
    return mask.copy(data=dilate_block(mask.values))


def invalid_mask(collection: str, asset: str, array, policy: MaskPolicy | None = None,
                 resolution_m: float | None = None):
    """Pixels to drop under ``policy`` (True = invalid); same type and shape as ``array``."""
    policy = policy or MaskPolicy()
    flags = decode_qa(collection, asset, array)
    mask = xr.zeros_like(flags[next(iter(flags.data_vars))], dtype=bool)
    for name in policy.drop:
        if name in flags and flags[name].dtype == bool:
            mask = mask | flags[name]
    if "cloud_confidence" in flags and policy.min_cloud_confidence != "high":
        mask = mask | (flags["cloud_confidence"] >= CONFIDENCE_LEVELS[policy.min_cloud_confidence])
    if policy.dilation_m > 0:
        if not resolution_m:
            raise ValueError("dilation_m needs the pixel size (resolution_m)")
        pixels = int(round(policy.dilation_m / resolution_m))
        if pixels > 0:
            fill = flags["fill"] if "fill" in flags else xr.zeros_like(mask)
            mask = _dilate(mask & ~fill, pixels) | fill
    if isinstance(array, xr.DataArray):
        return mask
    return mask.values
