"""Metrics and calibration against scipy, sklearn, numerical integration and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import mean_absolute_error, r2_score

from pipeline.uncertainty import metrics as M
from pipeline.uncertainty.calibration import (
    calibrate,
    conformal_quantile,
    gaussian_quantile,
    variance_scale,
    variance_scales,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.normal(10, 3, 400)
    mu = y + rng.normal(0, 1, 400)
    sigma = rng.uniform(0.5, 2.0, 400)
    return y, mu, sigma


def test_point_metrics_match_sklearn_and_closed_form(data):
    y, mu, _ = data
    assert M.r2(y, mu) == pytest.approx(r2_score(y, mu), rel=1e-12)
    assert M.mae(y, mu) == pytest.approx(mean_absolute_error(y, mu), rel=1e-12)
    assert M.rmse(np.array([0.0, 0.0]), np.array([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))
    assert M.bias(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.5)


def test_gaussian_nll_matches_scipy_logpdf(data):
    y, mu, sigma = data
    assert M.gaussian_nll(y, mu, sigma) == pytest.approx(-np.mean(stats.norm.logpdf(y, mu, sigma)), rel=1e-12)


def test_gaussian_crps_matches_numerical_integral():
    # CRPS(F, y) = ∫ (F(x) - 1{x >= y})² dx, integrated numerically for a few cases.
    for y, mu, s in [(0.3, 0.0, 1.0), (5.0, 2.0, 0.5), (-1.0, 1.0, 3.0)]:

        def f(x, mu=mu, s=s, y=y):
            return (stats.norm.cdf(x, mu, s) - (x >= y)) ** 2

        ref = integrate.quad(f, -np.inf, y)[0] + integrate.quad(f, y, np.inf)[0]
        assert M.gaussian_crps(np.array([y]), np.array([mu]), np.array([s])) == pytest.approx(ref, rel=1e-6)
    # sigma -> 0 reduces CRPS to the absolute error
    assert M.gaussian_crps(np.array([2.0]), np.array([0.5]), np.array([1e-9])) == pytest.approx(1.5, rel=1e-6)


def test_interval_metrics():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    lo, hi = np.array([-1.0, 1.5, 1.0, 2.0]), np.array([1.0, 2.0, 2.0, 5.0])
    assert M.picp(y, lo, hi) == pytest.approx(0.75)  # the second target lies outside
    assert M.mpiw(lo, hi) == pytest.approx((2 + 0.5 + 1 + 3) / 4)
    with pytest.raises(ValueError, match="upper bound below"):
        M.mpiw(hi, lo)


def test_ence_and_uce_by_hand():
    # Two equal-count bins: sigma {1,1} with errors {1,3}; sigma {2,2} with errors {2,2}.
    y = np.zeros(4)
    mu = np.array([1.0, 3.0, 2.0, -2.0])
    sigma = np.array([1.0, 1.0, 2.0, 2.0])
    rmse1, rmse2 = math.sqrt(5.0), 2.0
    assert M.ence(y, mu, sigma, n_bins=2) == pytest.approx((abs(1 - rmse1) / 1 + abs(2 - rmse2) / 2) / 2)
    assert M.uce(y, mu, sigma, n_bins=2) == pytest.approx(0.5 * abs(1 - 5) + 0.5 * abs(4 - 4))


def test_calibrated_gaussian_has_small_ence_and_nominal_coverage():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.5, 3, 20000)
    y = rng.normal(0, sigma)
    mu = np.zeros_like(y)
    assert M.ence(y, mu, sigma) < 0.05
    levels, observed = M.coverage_curve(y, mu, sigma, np.array([0.5, 0.9]))
    np.testing.assert_allclose(observed, levels, atol=0.01)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 10, 300).astype(float)
    b = a + rng.normal(0, 3, 300)
    assert M.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    assert math.isnan(M.spearman(np.ones(5), np.arange(5.0)))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="sigma must be strictly positive"):
        M.gaussian_nll(np.zeros(2), np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="mu has 3 values but y has 2"):
        M.rmse(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        M.mae(np.array([np.nan]), np.zeros(1))


def test_variance_scale_is_the_nll_minimiser(data):
    y, mu, sigma = data
    s = variance_scale(y, mu, sigma)
    grid = np.linspace(0.5 * s, 1.5 * s, 201)
    best = grid[np.argmin([M.gaussian_nll(y, mu, g * sigma) for g in grid])]
    assert best == pytest.approx(s, rel=0.01)


def test_conformal_quantile_rank():
    scores = np.arange(1.0, 10.0)  # n = 9; ceil(10 * 0.9) = 9 -> 9th smallest
    assert conformal_quantile(scores, 0.9) == 9.0
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(10 * 0.5) = 5
    assert math.isinf(conformal_quantile(scores[:5], 0.9))  # ceil(6 * 0.9) = 6 > 5


def test_split_conformal_marginal_coverage_guarantee():
    # Misspecified sigma (too small by 2x); conformal still gives coverage in [c, c + 1/(n+1)] on average.
    rng = np.random.default_rng(3)
    n_cal, n_test, c, cover = 99, 2000, 0.9, []
    for _ in range(300):
        s_cal, s_te = rng.uniform(1, 2, n_cal), rng.uniform(1, 2, n_test)
        y_cal, y_te = rng.normal(0, 2 * s_cal), rng.normal(0, 2 * s_te)
        cal = calibrate(y_cal, np.zeros(n_cal), s_cal, "conformal", c)
        _, lo, hi = cal.apply(np.zeros(n_test), s_te)
        cover.append(M.picp(y_te, lo, hi))
    assert c - 0.005 <= np.mean(cover) <= c + 1 / (n_cal + 1) + 0.005


def test_variance_calibration_fixes_a_scaled_sigma():
    rng = np.random.default_rng(4)
    s = rng.uniform(1, 2, 5000)
    y = rng.normal(0, 3 * s)
    cal = calibrate(y, np.zeros_like(y), s, "variance", 0.9)
    assert cal.aleatoric_scale == pytest.approx(3.0, rel=0.03)
    assert cal.aleatoric_scale == cal.epistemic_scale  # no spread given: one shared factor
    sigma, lo, hi = cal.apply(np.zeros(2), np.array([1.0, 2.0]))
    np.testing.assert_allclose(sigma, cal.aleatoric_scale * np.array([1.0, 2.0]))
    np.testing.assert_allclose(hi, gaussian_quantile(0.9) * sigma)
    assert "variance scaling" in cal.describe()
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrate(y, y, s, "isotonic")  # type: ignore[arg-type]


def test_separate_factors_recover_aleatoric_and_epistemic_inflation():
    # y ~ N(0, (2 σ_a)² + (5 σ_e)²): the noise head is 2x too narrow, the MC spread 5x.
    rng = np.random.default_rng(5)
    n = 20000
    sa, se = rng.uniform(0.5, 1.5, n), rng.uniform(0.1, 1.0, n)
    y = rng.normal(0, np.sqrt((2 * sa) ** 2 + (5 * se) ** 2))
    ka, ke = variance_scales(y, np.zeros(n), sa, se)
    assert ka == pytest.approx(2.0, rel=0.05) and ke == pytest.approx(5.0, rel=0.05)
    cal = calibrate(y, np.zeros(n), sa, "variance", 0.9, sigma_epistemic=se)
    shared = variance_scale(y, np.zeros(n), np.sqrt(sa**2 + se**2))
    two = M.gaussian_nll(y, np.zeros(n), cal.sigma(sa, se))
    assert two < M.gaussian_nll(y, np.zeros(n), shared * np.sqrt(sa**2 + se**2)) - 0.01
    assert "k_epistemic=" in cal.describe()


def test_separate_factors_never_lose_to_the_shared_factor_on_their_split():
    # A spread unrelated to the error: the fit may shrink k_e but its likelihood is >= the shared one's.
    rng = np.random.default_rng(6)
    sa, se = rng.uniform(1, 2, 300), rng.uniform(0, 3, 300)
    y = rng.normal(0, sa)
    cal = calibrate(y, np.zeros(300), sa, "conformal", 0.9, sigma_epistemic=se)
    shared = variance_scale(y, np.zeros(300), np.sqrt(sa**2 + se**2))
    assert (
        M.gaussian_nll(y, np.zeros(300), cal.sigma(sa, se))
        <= M.gaussian_nll(y, np.zeros(300), shared * np.sqrt(sa**2 + se**2)) + 1e-9
    )
    assert cal.epistemic_scale < cal.aleatoric_scale
    _, lo, hi = cal.apply(np.zeros(300), sa, se)
    assert M.picp(y, lo, hi) >= 0.9  # conformal on its own split
