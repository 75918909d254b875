"""Turn decoded QA flags into an invalid-pixel mask under a configurable policy."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.ndimage import binary_dilation

from pipeline.sensors.qa import all_flag_names, as_dataarray, decode_qa, qa_spec_for

#: Landsat C2 2-bit confidence levels (LSDS-1619 Table 6-3).
CONFIDENCE_LEVELS = {"low": 1, "medium": 2, "high": 3}

#: Flags that describe cloud or shadow; only these are buffered by ``dilation_m``.
CLOUD_FLAGS = (
    "cloud",
    "cloud_medium",
    "cloud_high",
    "cloud_mixed",
    "internal_cloud",
    "dilated_cloud",
    "adjacent_to_cloud",
    "cloud_shadow",
    "cirrus",
)
CLOUD_LIKE = frozenset(CLOUD_FLAGS)

DEFAULT_DROP = ("fill", "nodata", "saturated", "not_produced", *CLOUD_FLAGS)


class MaskPolicy(BaseModel):
    """Which QA flags make a pixel invalid (serialisable: ``model_dump_json`` for store attrs).

    ``drop``: flag names (as :func:`~pipeline.sensors.decode_qa` returns them) that remove a
    pixel; flags a product lacks are ignored, names no product has are an error. Default:
    fill/no data, saturated/defective, every cloud flag (incl. Landsat dilated cloud, SCL
    medium- and high-probability cloud, MODIS mixed and internal cloud), cloud shadow,
    cirrus, and the products' own cloud-adjacency buffers (HLS/MODIS ``adjacent_to_cloud``,
    kept consistent with Landsat's dilated cloud). Snow/ice, water, SCL dark area and
    unclassified, and aerosol levels are kept (add ``snow``, ``dark_area``,
    ``unclassified``, ``aerosol_high`` to drop them).

    ``min_cloud_confidence``: for products with a cloud-confidence level (Landsat), the
    ``cloud`` flag means "confidence >= this level": ``high`` equals the cloud bit
    (LSDS-1619: the bit is set for high confidence), ``medium`` also drops medium-confidence
    pixels, ``low`` drops every pixel with any cloud confidence (in practice most pixels).

    ``dilation_m``: buffer the cloud and shadow flags (not fill or saturation) by this many
    metres: binary dilation with a disk of radius ``dilation_m / resolution_m`` pixels.
    """

    model_config = ConfigDict(extra="forbid")

    drop: list[str] = Field(default_factory=lambda: list(DEFAULT_DROP))
    min_cloud_confidence: Literal["low", "medium", "high"] = "high"
    dilation_m: float = Field(0.0, ge=0.0)

    @field_validator("drop")
    @classmethod
    def _known_flags(cls, drop: list[str]) -> list[str]:
        unknown = sorted(set(drop) - all_flag_names())
        if unknown:
            raise ValueError(f"unknown QA flag(s) {unknown}; known flags: {sorted(all_flag_names())}")
        return drop


def disk(radius_px: float) -> np.ndarray:
    """Boolean disk: offsets (dy, dx) with ``dy**2 + dx**2 <= radius_px**2``."""
    r = math.floor(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius_px**2


def dilate(mask: xr.DataArray, radius_px: float) -> xr.DataArray:
    """Dilate a boolean mask over its last two dims (y, x) with a disk; lazy for dask input."""
    structure = disk(radius_px)
    r = structure.shape[0] // 2
    if r == 0:
        return mask

    def block(b: np.ndarray) -> np.ndarray:
        return binary_dilation(b, structure=structure.reshape((1,) * (b.ndim - 2) + structure.shape))

    if mask.chunks is None:
        return mask.copy(data=block(mask.values))
    import dask.array as da

    depth = {mask.ndim - 2: r, mask.ndim - 1: r}
    return mask.copy(data=da.map_overlap(block, mask.data, depth=depth, boundary="none", dtype=bool))


def _flag_masks(
    collection: str, asset: str, array: xr.DataArray, policy: MaskPolicy
) -> tuple[xr.DataArray, xr.DataArray]:
    """``(plain, cloudy)`` invalid flags of QA values by decoding every flag the policy names."""
    flags = decode_qa(collection, asset, array, names={*policy.drop, "cloud_confidence"})
    names = [n for n in policy.drop if n in flags and flags[n].dtype == bool]
    if "cloud_confidence" in flags and "cloud" in names:
        threshold = CONFIDENCE_LEVELS[policy.min_cloud_confidence]
        flags["cloud"] = flags["cloud"] | (flags["cloud_confidence"] >= threshold)
    plain = xr.zeros_like(array, dtype=bool)
    cloudy = xr.zeros_like(array, dtype=bool)
    for n in names:
        if n in CLOUD_LIKE:
            cloudy = cloudy | flags[n]
        else:
            plain = plain | flags[n]
    return plain, cloudy


@functools.lru_cache(maxsize=64)
def _lookup_tables(collection: str, asset: str, policy_json: str, dtype: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(plain, cloudy)`` boolean tables indexed by QA value - min(dtype), for <= 16-bit integer QA.

    Built by decoding every possible value once with :func:`_flag_masks`, so a QA chunk
    is masked with one table lookup instead of a dozen bit tests (the same rules, exactly).
    ``None`` for dtypes without a small table (float QA with NaN fill, 32-bit codes).
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize > 2:
        return None
    info = np.iinfo(dt)
    values = xr.DataArray(np.arange(info.min, info.max + 1, dtype=dt), dims="value")
    plain, cloudy = _flag_masks(collection, asset, values, MaskPolicy.model_validate_json(policy_json))
    return plain.values, cloudy.values


def _look_up(table: np.ndarray, array: xr.DataArray) -> xr.DataArray:
    """``table[value - min]`` elementwise; lazy (one task per chunk) for dask-backed input."""
    low = int(np.iinfo(array.dtype).min)

    def block(b: np.ndarray) -> np.ndarray:
        return table[b] if low == 0 else table[b.astype(np.int32) - low]

    if array.chunks is None:
        return array.copy(data=block(array.values))
    return array.copy(data=array.data.map_blocks(block, dtype=bool))


def invalid_mask(
    collection: str, asset: str, array: Any, policy: MaskPolicy | None = None, resolution_m: float | None = None
) -> Any:
    """Pixels to drop under ``policy`` (True = invalid), same type/shape/dims as ``array``.

    ``array`` holds QA values of ``collection``'s ``asset`` (numpy, or numpy-/dask-backed
    DataArray with y, x as the last two dims; dask stays lazy). ``resolution_m`` is its pixel
    size in metres, used by ``policy.dilation_m``; default: the asset's native resolution.
    8- and 16-bit integer QA is masked through a lookup table of every possible value.
    """
    policy = policy or MaskPolicy()
    qa = as_dataarray(array)
    tables = _lookup_tables(collection, asset, policy.model_dump_json(), qa.dtype.str)
    if tables is not None and policy.dilation_m == 0:
        mask = _look_up(tables[0] | tables[1], qa)
    else:
        plain, cloudy = (
            (_look_up(t, qa) for t in tables) if tables is not None else _flag_masks(collection, asset, qa, policy)
        )
        if policy.dilation_m > 0:
            resolution_m = resolution_m or qa_spec_for(collection, asset).resolution_m
            cloudy = dilate(cloudy, policy.dilation_m / resolution_m)
        mask = plain | cloudy
    return mask if isinstance(array, xr.DataArray) else mask.values
