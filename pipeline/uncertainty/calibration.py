"""Post-hoc recalibration on a held-out calibration split.

* **Variance scaling** (Levi et al. 2019), one factor per source of uncertainty: the calibrated
  variance is ``σ² = k_a² σ_a² + k_e² σ_e²`` (``σ_a`` the predicted noise, ``σ_e`` the MC/ensemble
  spread). ``k_a, k_e`` maximise the Gaussian likelihood of the calibration split. The MC spread and
  the noise head are off by different amounts (a spread too narrow, or wider than the errors need), so
  one shared factor would trade one against the other; ``k_e`` says how much the spread had to grow or
  shrink. Without a spread (or a zero one) it is the single factor ``k_a² = mean(r² / σ_a²)``
  (``r = y - μ``). Intervals are Gaussian: ``μ ± z_{(1+c)/2} · σ``.
* **Split conformal** (normalised scores, Lei et al. 2018): scores ``|r| / σ`` on the ``n``
  calibration samples (``σ`` variance-scaled as above); ``q̂`` is their ``⌈(n + 1) c⌉``-th smallest
  value and the interval is ``μ ± q̂ σ``. For exchangeable data its marginal coverage is ``>= c`` (and
  ``< c + 1/(n+1)`` without ties). The sorted scores are kept, so an interval at any other coverage
  is the ``⌈(n + 1) c'⌉``-th score (:meth:`Calibration.at`); Gaussian intervals take ``z_{(1+c')/2}``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import ndtri

CalibrationKind = Literal["none", "variance", "conformal"]
KINDS: tuple[str, ...] = ("none", "variance", "conformal")
#: Bounds of the fitted log variance factors (a factor of e^±10 on σ).
_LOG_FACTOR_BOUND = 20.0


@dataclass(frozen=True)
class Calibration:
    """Fitted recalibration: σ factors ``aleatoric_scale`` (``k_a``) and ``epistemic_scale`` (``k_e``),
    and ``interval_factor``, the interval half-width over the calibrated σ. ``scores`` (split
    conformal only) are the sorted normalised calibration scores ``|r| / σ`` (dimensionless), kept
    so :meth:`at` serves any coverage; ``None`` for Gaussian intervals and models saved before them."""

    kind: CalibrationKind
    coverage: float
    aleatoric_scale: float
    epistemic_scale: float
    interval_factor: float
    n_calibration: int
    scores: tuple[float, ...] | None = None

    def describe(self) -> str:
        """One line for outputs' attributes, e.g. ``split-conformal 90% interval (q=1.7, n=315) + ...``."""
        scales = f"k_aleatoric={self.aleatoric_scale:.3f}, k_epistemic={self.epistemic_scale:.3f}"
        return {
            "none": f"none (Gaussian {self.coverage:.0%} interval)",
            "variance": f"variance scaling ({scales}, n={self.n_calibration})",
            "conformal": f"split-conformal {self.coverage:.0%} interval (q={self.interval_factor:.3f}, "
            f"n={self.n_calibration}) + variance scaling ({scales})",
        }[self.kind]

    def sigma(self, sigma_aleatoric: np.ndarray, sigma_epistemic: np.ndarray | None = None) -> np.ndarray:
        """Calibrated σ ``sqrt((k_a σ_a)² + (k_e σ_e)²)``."""
        var = (self.aleatoric_scale * np.asarray(sigma_aleatoric)) ** 2
        if sigma_epistemic is not None:
            var = var + (self.epistemic_scale * np.asarray(sigma_epistemic)) ** 2
        return np.sqrt(var)

    def apply(
        self, mu: np.ndarray, sigma_aleatoric: np.ndarray, sigma_epistemic: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sigma_calibrated, lower, upper)`` from raw predictive ``mu`` and σ parts."""
        sigma = self.sigma(sigma_aleatoric, sigma_epistemic)
        half = self.interval_factor * sigma
        return sigma, mu - half, mu + half

    def at(self, coverage: float) -> Calibration:
        """The same calibration with intervals of nominal ``coverage``: the conformal quantile of the
        kept scores, or the Gaussian quantile. The σ factors are unchanged."""
        _check_coverage(coverage)
        if coverage == self.coverage:
            return self
        if self.kind != "conformal":
            return replace(self, coverage=coverage, interval_factor=gaussian_quantile(coverage))
        if self.scores is None:
            raise ValueError(
                f"this model keeps no conformal calibration scores; it serves only its "
                f"{self.coverage:.0%} interval, not {coverage:.0%}"
            )
        q = conformal_quantile(np.asarray(self.scores), coverage)
        if math.isinf(q):
            raise ValueError(
                f"{len(self.scores)} calibration scores are too few for a {coverage:.0%} conformal interval"
            )
        return replace(self, coverage=coverage, interval_factor=q)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scores"] = None if self.scores is None else list(self.scores)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (also reads dicts without ``scores``)."""
        scores = d.get("scores")
        return cls(**{**d, "scores": None if scores is None else tuple(float(v) for v in scores)})


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


def variance_scales(
    y: np.ndarray, mu: np.ndarray, sigma_aleatoric: np.ndarray, sigma_epistemic: np.ndarray
) -> tuple[float, float]:
    """Maximum-likelihood ``(k_a, k_e)`` of ``y ~ N(mu, k_a² σ_a² + k_e² σ_e²)``.

    Starts from the single shared factor (``k_a = k_e``) and moves the two log-variances by
    L-BFGS-B within ``e^±20``; the likelihood is never worse than the shared factor's.
    """
    r2, va, ve = (y - mu) ** 2, sigma_aleatoric**2, sigma_epistemic**2

    def nll(log_k2: np.ndarray) -> tuple[float, np.ndarray]:
        ka2, ke2 = np.exp(log_k2)
        var = ka2 * va + ke2 * ve
        ratio = r2 / var
        grad_var = 0.5 * (1 - ratio) / var  # d NLL / d var, per sample
        return (
            float(np.mean(0.5 * np.log(var) + 0.5 * ratio)),
            np.array([np.mean(grad_var * ka2 * va), np.mean(grad_var * ke2 * ve)]),
        )

    start = 2 * math.log(variance_scale(y, mu, np.sqrt(va + ve)))
    bounds = [(-_LOG_FACTOR_BOUND, _LOG_FACTOR_BOUND)] * 2
    best = minimize(nll, np.array([start, start]), jac=True, method="L-BFGS-B", bounds=bounds)
    log_k2 = best.x if best.fun <= nll(np.array([start, start]))[0] else np.array([start, start])
    ka, ke = np.exp(0.5 * log_k2)
    return float(ka), float(ke)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``⌈(n + 1) · coverage⌉``-th smallest score (``inf`` when that exceeds ``n``)."""
    _check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    k = math.ceil((s.size + 1) * coverage)
    return math.inf if k > s.size else float(s[k - 1])


def calibrate(
    y: np.ndarray,
    mu: np.ndarray,
    sigma_aleatoric: np.ndarray,
    kind: CalibrationKind = "conformal",
    coverage: float = 0.9,
    sigma_epistemic: np.ndarray | None = None,
) -> Calibration:
    """Fit a recalibration of predictive ``N(mu, σ_a² + σ_e²)`` on calibration targets ``y`` (1-D arrays).

    ``sigma_aleatoric`` is the predicted noise σ (or any single predictive σ when
    ``sigma_epistemic``, the MC/ensemble spread, is not given or is zero everywhere).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; choose one of {', '.join(KINDS)}")
    z = gaussian_quantile(coverage)
    if kind == "none":
        return Calibration("none", coverage, 1.0, 1.0, z, 0)
    y, mu, sa = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, mu, sigma_aleatoric))
    se = np.zeros_like(sa) if sigma_epistemic is None else np.asarray(sigma_epistemic, dtype=np.float64).reshape(-1)
    if y.size < 2 or not (y.size == mu.size == sa.size == se.size):
        raise ValueError(
            f"calibration needs >= 2 samples with matching y/mu/sigma, got {y.size}/{mu.size}/{sa.size}/{se.size}"
        )
    if np.any(sa <= 0) or np.any(se < 0):
        raise ValueError("sigma must be strictly positive (and the epistemic sigma non-negative) for calibration")
    if np.any(se > 0):
        ka, ke = variance_scales(y, mu, sa, se)
    else:
        ka = ke = variance_scale(y, mu, sa)
    cal = Calibration(kind, coverage, ka, ke, z, y.size)
    if kind == "variance":
        return cal
    scores = np.sort(np.abs(y - mu) / cal.sigma(sa, se))
    q = conformal_quantile(scores, coverage)
    if math.isinf(q):
        raise ValueError(f"{y.size} calibration samples are too few for a {coverage:.0%} conformal interval")
    return Calibration("conformal", coverage, ka, ke, q, y.size, tuple(float(v) for v in scores))
