"""Accuracy and uncertainty-quality metrics for Gaussian regression predictions.

Every function takes 1-D arrays of equal length: targets ``y``, predictive means ``mu`` and
predictive standard deviations ``sigma`` (all in target units; ``sigma > 0``). Interval metrics
take the interval bounds ``lower``/``upper``. Pure numpy/scipy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata


def _as_1d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check(y: np.ndarray, *others: tuple[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    y = _as_1d("y", y)
    if y.size == 0:
        raise ValueError("metrics need at least one sample")
    out = [y]
    for name, a in others:
        a = _as_1d(name, a)
        if a.shape != y.shape:
            raise ValueError(f"{name} has {a.size} values but y has {y.size}")
        if name == "sigma" and np.any(a <= 0):
            raise ValueError("sigma must be strictly positive")
        out.append(a)
    return tuple(out)


def r2(y: np.ndarray, mu: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (SS_tot about the mean of ``y``)."""
    y, mu = _check(y, ("mu", mu))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        raise ValueError("R² is undefined for constant targets")
    return 1.0 - float(np.sum((y - mu) ** 2)) / ss_tot


def rmse(y: np.ndarray, mu: np.ndarray) -> float:
    """Root mean squared error, target units."""
    y, mu = _check(y, ("mu", mu))
    return float(np.sqrt(np.mean((y - mu) ** 2)))


def mae(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean absolute error, target units."""
    y, mu = _check(y, ("mu", mu))
    return float(np.mean(np.abs(y - mu)))


def bias(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean signed error ``mean(mu - y)`` (positive = over-prediction), target units."""
    y, mu = _check(y, ("mu", mu))
    return float(np.mean(mu - y))


def gaussian_nll(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean negative log-likelihood of ``y`` under ``N(mu, sigma²)``, nats, including ``½ log 2π``."""
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    z = (y - mu) / sigma
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(sigma) + 0.5 * z**2))


def gaussian_crps(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean continuous ranked probability score of ``N(mu, sigma²)``, closed form, target units.

    ``CRPS = sigma * [z (2Φ(z) - 1) + 2φ(z) - 1/√π]`` with ``z = (y - mu) / sigma``
    (Gneiting & Raftery 2007); lower is better, and it equals MAE when ``sigma -> 0``.
    """
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    z = (y - mu) / sigma
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return float(np.mean(sigma * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))))


def picp(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Prediction-interval coverage probability: fraction of ``y`` with ``lower <= y <= upper``."""
    y, lower, upper = _check(y, ("lower", lower), ("upper", upper))
    return float(np.mean((y >= lower) & (y <= upper)))


def mpiw(lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean prediction-interval width ``mean(upper - lower)``, target units."""
    lower, upper = _check(lower, ("upper", upper))
    if np.any(upper < lower):
        raise ValueError("upper bound below lower bound")
    return float(np.mean(upper - lower))


def _equal_count_bins(sigma: np.ndarray, n_bins: int) -> list[np.ndarray]:
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    order = np.argsort(sigma, kind="stable")
    return [b for b in np.array_split(order, min(n_bins, sigma.size)) if b.size]


def ence(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, n_bins: int = 10) -> float:
    """Expected normalised calibration error (Levi et al. 2019), dimensionless.

    Samples are sorted by ``sigma`` and split into ``n_bins`` equal-count bins ``B_k``;
    ``RMV_k = sqrt(mean_{B_k} sigma²)``, ``RMSE_k = sqrt(mean_{B_k} (y - mu)²)`` and
    ``ENCE = (1/K) Σ_k |RMV_k - RMSE_k| / RMV_k``. 0 means perfectly calibrated.
    """
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    terms = []
    for b in _equal_count_bins(sigma, n_bins):
        rmv = math.sqrt(float(np.mean(sigma[b] ** 2)))
        rmse_k = math.sqrt(float(np.mean((y[b] - mu[b]) ** 2)))
        terms.append(abs(rmv - rmse_k) / rmv)
    return float(np.mean(terms))


def uce(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, n_bins: int = 10) -> float:
    """Uncertainty calibration error (Laves et al. 2020), squared target units.

    With the same equal-count ``sigma`` bins as :func:`ence`:
    ``UCE = Σ_k (|B_k| / N) |MV_k - MSE_k|`` where ``MV_k = mean_{B_k} sigma²`` and
    ``MSE_k = mean_{B_k} (y - mu)²``. 0 means perfectly calibrated.
    """
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    return float(
        sum(
            b.size / y.size * abs(np.mean(sigma[b] ** 2) - np.mean((y[b] - mu[b]) ** 2))
            for b in _equal_count_bins(sigma, n_bins)
        )
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks (ties share their mean rank).

    NaN when either input is constant (the correlation is undefined), as in ``scipy.stats.spearmanr``.
    """
    a, b = _check(a, ("b", b))
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (a.size + 1) / 2
    denom = math.sqrt(float(np.sum(ra**2) * np.sum(rb**2)))
    if denom == 0:
        return math.nan
    return float(np.sum(ra * rb) / denom)


def coverage_curve(
    y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, levels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Observed coverage of central Gaussian intervals ``mu ± z_{(1+p)/2} sigma`` at nominal levels ``p``.

    Returns ``(levels, observed)``; a calibrated predictor lies on the diagonal (reliability diagram).
    """
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    levels = np.linspace(0.05, 0.95, 19) if levels is None else np.asarray(levels, dtype=np.float64)
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError("coverage levels must lie in (0, 1)")
    z = np.abs(y - mu) / sigma
    half = ndtri((1 + levels) / 2)
    return levels, (z[None, :] <= half[:, None]).mean(axis=1)


@dataclass(frozen=True)
class RegressionReport:
    """All metrics of one prediction set (see the functions of this module for definitions)."""

    r2: float
    rmse: float
    mae: float
    bias: float
    nll: float
    crps: float
    picp: float
    mpiw: float
    ence: float
    uce: float
    spearman_sigma_abs_error: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluate(
    y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, lower: np.ndarray, upper: np.ndarray, n_bins: int = 10
) -> RegressionReport:
    """Compute every metric of this module for one prediction set."""
    y, mu, sigma = _check(y, ("mu", mu), ("sigma", sigma))
    return RegressionReport(
        r2=r2(y, mu),
        rmse=rmse(y, mu),
        mae=mae(y, mu),
        bias=bias(y, mu),
        nll=gaussian_nll(y, mu, sigma),
        crps=gaussian_crps(y, mu, sigma),
        picp=picp(y, lower, upper),
        mpiw=mpiw(lower, upper),
        ence=ence(y, mu, sigma, n_bins),
        uce=uce(y, mu, sigma, n_bins),
        spearman_sigma_abs_error=spearman(sigma, np.abs(y - mu)),
    )
