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
    def from_json(cls, d: dict) -> Quantiser:
        return cls(
            offset=tuple(float(v) for v in d["offset"]),
            step=float(d["step"]),
            bits=int(d["bits"]),
            precision=str(d["precision"]),
        )


#: grid spacings tried, coarsest first, for float bands given no lossless step: values stored as floats
#: but whole (DN), decimal steps (0.02: MODIS land surface temperature), Landsat Collection 2 surface
#: temperature (0.00341802 K from 149 K), reflectance from DN (1e-4: Sentinel-2 L2A, MODIS) and Landsat
#: Collection 2 surface reflectance (2.75e-5 from -0.2), and the spacing of the values themselves.
GRID_STEPS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.00341802, 1e-3, 1e-4, 5e-5, 2.75e-5, 2e-5, 1e-5, 1e-6)
#: grid origins tried besides 0 and the multiple of the step just under the smallest value
GRID_ORIGINS = (-0.2, -0.1, 149.0)


def _short(v: float) -> float:
    """``v`` as the shortest decimal that identifies its float32 (0.1 stays 0.1, not 0.100000001)."""
    return float(str(np.float32(v)))


def grid_candidates(values: np.ndarray, n_codes: int = 65536, max_values: int = 1_000_000) -> list[tuple[float, float]]:
    """``(origin, step)`` pairs, coarsest step first, of grids ``origin + k * step`` with ``k`` in
    ``0 .. n_codes - 1`` that every one of ``values`` (finite, any shape) lies on to within 1 % of the step.

    The caller checks which one, if any, rebuilds the values bit for bit (float rounding). At most
    ``max_values`` distinct values are looked at (evenly spaced over the sorted distinct values).
    """
    v = np.unique(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return [(0.0, 1.0)]
    if v.size > max_values:
        v = v[np.linspace(0, v.size - 1, max_values).round().astype(int)]
    steps = list(GRID_STEPS)
    if v.size > 1:
        span = v[-1] - v[0]  # the smallest spacing, averaged over the whole span, to 6 digits
        steps.append(float(f"{span / np.rint(span / np.diff(v).min()):.6g}"))
    found = []
    for step in sorted(set(steps), reverse=True):
        below = _short(np.floor(v[0] / step + 1e-3) * step)
        for origin in dict.fromkeys((0.0, below, *GRID_ORIGINS, _short(v[0]))):
            k = np.rint((v - origin) / step)
            if k[0] >= 0 and k[-1] < n_codes and np.all(np.abs(origin + k * step - v) <= 0.01 * step):
                found.append((origin, step))
    return found


def missing_mask(x: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where ``x`` is NaN or equals ``nodata`` (same shape as ``x``)."""
    miss = np.isnan(x) if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        miss |= x == nodata
    return miss


def _fill_along(v: np.ndarray, valid: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``v`` with each invalid entry replaced by the nearest valid one before it along ``axis``
    (else the first valid one after it), and whether each line along ``axis`` has any valid entry."""
    v, valid = np.moveaxis(v, axis, -1), np.moveaxis(valid, axis, -1)
    index = np.where(valid, np.arange(v.shape[-1]), 0)
    np.maximum.accumulate(index, axis=-1, out=index)
    seen = np.logical_or.accumulate(valid, axis=-1)
    index = np.where(seen, index, valid.argmax(axis=-1)[..., None])
    return np.moveaxis(np.take_along_axis(v, index, axis=-1), -1, axis), np.asarray(valid.any(axis=-1))


def fill_missing(x: np.ndarray, missing: np.ndarray, default: float) -> np.ndarray:
    """Float64 copy of ``x`` (band, time, y, x) with missing values replaced by what codes cheapest.

    A missing pixel takes the nearest valid value to its left in its row (else to its right);
    a row with no valid value copies the nearest row above that has one (else below). So a
    masked region is flat along rows and continues the picture at its edges: the codec's
    spatial predictors guess it exactly (ffv1's median predictor codes it as zeros) and no
    artificial edge is created. A frame with no valid value at all takes the per-pixel temporal
    mean of the valid values, then the band mean, then ``default``. The mask restores the
    original missing values exactly on decode, so the fill is invisible. On the demo cube it
    codes in fewer bits than a temporal-mean fill, lossless and lossy at the same PSNR
    (docs/history/results-compression.md, "Masked pixels filled along rows").
    """
    v = np.where(missing, np.nan, x.astype(np.float64))
    if not missing.any():
        return v
    rows, row_has_data = _fill_along(v, ~missing, axis=3)
    frames, frame_has_data = _fill_along(rows, np.broadcast_to(row_has_data[..., None], rows.shape), axis=2)
    filled = np.where(frame_has_data[:, :, None, :], frames, np.nan)
    if np.isnan(filled).any():
        with np.errstate(invalid="ignore", divide="ignore"):
            count_t = (~missing).sum(axis=1, keepdims=True)
            pixel_mean = np.where(count_t > 0, np.nansum(v, axis=1, keepdims=True) / np.maximum(count_t, 1), np.nan)
            count_b = (~missing).sum(axis=(1, 2, 3), keepdims=True)
            band_mean = np.where(
                count_b > 0, np.nansum(v, axis=(1, 2, 3), keepdims=True) / np.maximum(count_b, 1), default
            )
        filled = np.where(np.isnan(filled), np.where(np.isnan(pixel_mean), band_mean, pixel_mean), filled)
    return np.where(missing, filled, v)
