"""Input checking and standardisation of ``(sample, time, feature)`` arrays.

``X`` may be numpy or an ``xarray.DataArray`` with dims ``(sample, time, feature)``. Missing
entries are NaN in ``X`` and/or ``False`` in ``mask`` (``True`` = observed; shape
``(sample, time, feature)`` or ``(sample, time)`` for whole steps). Features are standardised
with the mean and standard deviation of their observed training values; missing entries become
``fill_value`` (0 = the feature mean) with a valid flag of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

DIMS = ("sample", "time", "feature")


def as_array(
    X: np.ndarray | xr.DataArray, mask: np.ndarray | xr.DataArray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [N, T, F] float64 with NaN where missing, valid [N, T, F] bool)``; checks shapes."""
    if isinstance(X, xr.DataArray):
        if set(X.dims) != set(DIMS):
            raise ValueError(f"X must have dims {DIMS}, got {X.dims}")
        X = X.transpose(*DIMS).values
    x = np.array(X, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"X must be 3-D (sample, time, feature), got shape {x.shape}")
    if min(x.shape) < 1:
        raise ValueError(f"X has an empty dimension: shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError("X contains infinite values; mark missing values as NaN or through mask")
    valid = np.isfinite(x)
    if mask is not None:
        if isinstance(mask, xr.DataArray):
            mask = mask.transpose(*[d for d in DIMS if d in mask.dims]).values
        m = np.asarray(mask)
        if m.shape == x.shape[:2]:
            m = np.broadcast_to(m[..., None], x.shape)
        if m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} matches neither X {x.shape} nor its (sample, time) part")
        valid &= m.astype(bool)
    x[~valid] = np.nan
    return x, valid


def as_target(y: np.ndarray | xr.DataArray, n: int) -> np.ndarray:
    """Targets as float64 ``[N]``; every value must be finite."""
    t = np.asarray(y.values if isinstance(y, xr.DataArray) else y, dtype=np.float64).reshape(-1)
    if t.size != n:
        raise ValueError(f"y has {t.size} values but X has {n} samples")
    if not np.all(np.isfinite(t)):
        raise ValueError("y contains NaN or infinite values; drop unlabelled samples first")
    return t


@dataclass
class Standardizer:
    """Per-feature and target location/scale learned on the training split."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    fill_value: float = 0.0

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, fill_value: float = 0.0) -> Standardizer:
        """Statistics over observed entries of ``x [N, T, F]`` and over ``y [N]``."""
        counts = np.isfinite(x).sum(axis=(0, 1))
        if np.any(counts == 0):
            raise ValueError(
                f"features {np.flatnonzero(counts == 0).tolist()} have no observed value in the training split"
            )
        mean = np.nanmean(x, axis=(0, 1))
        std = np.nanstd(x, axis=(0, 1))
        std = np.where(std > 0, std, 1.0)
        y_std = float(np.std(y))
        return cls(mean, std, float(np.mean(y)), y_std if y_std > 0 else 1.0, fill_value)

    def transform(self, x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised float32 values with missing -> ``fill_value``, and float32 valid flags."""
        if x.shape[-1] != self.x_mean.size:
            raise ValueError(f"X has {x.shape[-1]} features but the model was fitted on {self.x_mean.size}")
        z = (x - self.x_mean) / self.x_std
        z = np.where(valid, z, self.fill_value).astype(np.float32)
        return z, valid.astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "x_mean": self.x_mean.tolist(),
            "x_std": self.x_std.tolist(),
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "fill_value": self.fill_value,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(
            np.asarray(d["x_mean"]),
            np.asarray(d["x_std"]),
            float(d["y_mean"]),
            float(d["y_std"]),
            float(d["fill_value"]),
        )


def split_indices(
    n: int, fractions: tuple[float, float], seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint ``(train, validation, calibration)`` indices.

    ``fractions`` are the validation and calibration shares. With ``groups`` (e.g. site ids) whole
    groups go to one split, so validation and calibration see unseen groups as a test set would.
    """
    f_val, f_cal = fractions
    if f_val < 0 or f_cal < 0 or f_val + f_cal >= 0.9:
        raise ValueError(f"validation ({f_val}) and calibration ({f_cal}) fractions must be >= 0 and sum below 0.9")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val, n_cal = round(f_val * n), round(f_cal * n)
        return order[n_val + n_cal :], order[:n_val], order[n_val : n_val + n_cal]
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups has shape {g.shape}, expected ({n},)")
    uniq = rng.permutation(np.unique(g))
    val_groups, cal_groups, n_val, n_cal = [], [], 0, 0
    for u in uniq:  # fill validation, then calibration, to at least their shares; the rest trains
        size = int(np.sum(g == u))
        if n_val < f_val * n:
            val_groups.append(u)
            n_val += size
        elif n_cal < f_cal * n:
            cal_groups.append(u)
            n_cal += size
    in_val, in_cal = np.isin(g, val_groups), np.isin(g, cal_groups)
    if (in_val | in_cal).all():
        raise ValueError(f"too few groups ({uniq.size}) to hold out validation and calibration groups and still train")
    idx = np.arange(n)
    return idx[~in_val & ~in_cal], idx[in_val], idx[in_cal]
