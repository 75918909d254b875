"""Post-hoc recalibration on a held-out calibration split.

* **Variance scaling** (Levi et al. 2019): one factor ``s`` multiplies every predictive σ; ``s²``
  is the maximum-likelihood value ``mean(r² / σ²)`` on the calibration split (``r = y - μ``).
  Intervals are Gaussian: ``μ ± z_{(1+c)/2} · s · σ``.
* **Split conformal** (normalised scores, Lei et al. 2018): scores ``|r| / σ`` on the ``n``
  calibration samples; ``q̂`` is their ``⌈(n + 1) c⌉``-th smallest value and the interval is
  ``μ ± q̂ σ``. For exchangeable data its marginal coverage is ``>= c`` (and ``< c + 1/(n+1)``
  without ties). σ itself is still reported variance-scaled.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtri

CalibrationKind = Literal["none", "variance", "conformal"]
KINDS: tuple[str, ...] = ("none", "variance", "conformal")


@dataclass(frozen=True)
class Calibration:
    """Fitted recalibration: ``sigma_scale`` for σ and ``interval_factor`` for the interval half-width / σ_raw."""

    kind: CalibrationKind
    coverage: float
    sigma_scale: float
    interval_factor: float
    n_calibration: int

    def describe(self) -> str:
        """One line for outputs' attributes, e.g. ``split-conformal (90%, n=315)``."""
        return {"none": f"none (Gaussian {self.coverage:.0%} interval)",
                "variance": f"variance scaling (s={self.sigma_scale:.3f}, n={self.n_calibration})",
                "conformal": f"split-conformal {self.coverage:.0%} interval (q={self.interval_factor:.3f}, "
                             f"n={self.n_calibration}) + variance-scaled sigma (s={self.sigma_scale:.3f})"}[self.kind]

    def apply(self, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sigma_calibrated, lower, upper)`` from raw predictive ``mu``, ``sigma``."""
        half = self.interval_factor * sigma
        return self.sigma_scale * sigma, mu - half, mu + half

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_quantile(coverage: float) -> float:
    """``z`` with ``P(|Z| <= z) = coverage`` for a standard normal ``Z``."""
    _check_coverage(coverage)
    return float(ndtri((1 + coverage) / 2))


def _check_coverage(coverage: float) -> None:
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")


def variance_scale(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Maximum-likelihood σ multiplier ``sqrt(mean(((y - mu) / sigma)²))``."""
    return math.sqrt(float(np.mean(((y - mu) / sigma) ** 2)))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``⌈(n + 1) · coverage⌉``-th smallest score (``inf`` when that exceeds ``n``)."""
    _check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    k = math.ceil((s.size + 1) * coverage)
    return math.inf if k > s.size else float(s[k - 1])


def calibrate(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, kind: CalibrationKind = "conformal",
              coverage: float = 0.9) -> Calibration:
    """Fit a recalibration of predictive ``N(mu, sigma²)`` on calibration targets ``y`` (1-D arrays)."""
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; choose one of {', '.join(KINDS)}")
    z = gaussian_quantile(coverage)
    y, mu, sigma = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, mu, sigma))
    if kind == "none":
        return Calibration("none", coverage, 1.0, z, 0)
    if y.size < 2 or not (y.size == mu.size == sigma.size):
        raise ValueError(f"calibration needs >= 2 samples with matching y/mu/sigma, got {y.size}/{mu.size}/{sigma.size}")
    if np.any(sigma <= 0):
        raise ValueError("sigma must be strictly positive for calibration")
    s = variance_scale(y, mu, sigma)
    if kind == "variance":
        return Calibration("variance", coverage, s, z * s, y.size)
    q = conformal_quantile(np.abs(y - mu) / sigma, coverage)
    if math.isinf(q):
        raise ValueError(f"{y.size} calibration samples are too few for a {coverage:.0%} conformal interval")
    return Calibration("conformal", coverage, s, q, y.size)
