"""Fixed-range quantisation of band stacks to unsigned integer codes, and the mask of missing values.

Pure numpy. Arrays are ``(band, time, y, x)``; values are in the cube's physical unit
(reflectance, or digital numbers for raw products). Codes are ``offset + code * step``:
one shared ``step`` for every component and a per-component ``offset`` derived from a fixed
physical range, never from per-chunk minima/maxima (which clouds would inflate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantiser:
    """``code = round((value - offset[k]) / step)`` clipped to ``[0, 2**bits - 1]`` for component ``k``."""

    offset: tuple[float, ...]
    step: float
    bits: int
    #: arithmetic of ``to_values``: "float64", or "float32" to reproduce grids built as float32 DN * scale
    precision: str = "float64"

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def to_codes(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Codes (uint16, same shape) of ``values`` (component, ...); also how many values were clipped."""
        off = np.asarray(self.offset, dtype=np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
        scaled = np.rint((values - off) / self.step)
        clipped = int(np.count_nonzero((scaled < 0) | (scaled > self.max_code)))
        return np.clip(scaled, 0, self.max_code).astype(np.uint16), clipped

    def to_values(self, codes: np.ndarray) -> np.ndarray:
        """Values (component, ...) of ``codes``, computed in ``precision``."""
        dt = np.dtype(self.precision)
        off = np.asarray(self.offset, dtype=dt).reshape((-1,) + (1,) * (codes.ndim - 1))
        return off + codes.astype(dt) * dt.type(self.step)

    def to_json(self) -> dict:
        return {"offset": list(self.offset), "step": self.step, "bits": self.bits, "precision": self.precision}

    @classmethod
    def from_json(cls, d: dict) -> "Quantiser":
        return cls(offset=tuple(float(v) for v in d["offset"]), step=float(d["step"]), bits=int(d["bits"]),
                   precision=str(d["precision"]))


def missing_mask(x: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where ``x`` is NaN or equals ``nodata`` (same shape as ``x``)."""
    miss = np.isnan(x) if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        miss |= x == nodata
    return miss


def fill_missing(x: np.ndarray, missing: np.ndarray, default: float) -> np.ndarray:
    """Float64 copy of ``x`` (band, time, y, x) with missing values replaced by a smooth background.

    The background is the per-pixel temporal mean of the valid values (what the video codec
    predicts best), then the band mean, then ``default`` where a band has no valid value at all.
    The mask restores the original missing values exactly on decode, so the fill is invisible.
    """
    v = np.where(missing, np.nan, x.astype(np.float64))
    if not missing.any():
        return v
    with np.errstate(invalid="ignore", divide="ignore"):
        count_t = (~missing).sum(axis=1, keepdims=True)
        pixel_mean = np.where(count_t > 0, np.nansum(v, axis=1, keepdims=True) / np.maximum(count_t, 1), np.nan)
        count_b = (~missing).sum(axis=(1, 2, 3), keepdims=True)
        band_mean = np.where(count_b > 0, np.nansum(v, axis=(1, 2, 3), keepdims=True) / np.maximum(count_b, 1), default)
    background = np.where(np.isnan(pixel_mean), band_mean, pixel_mean)
    return np.where(missing, background, v)
