"""MC-ConcTD on the real fuel-moisture series (site-held-out test split of the Presto paper)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.uncertainty import evaluate, fit
from pipeline.uncertainty.datasets import load_fuel_moisture

torch.set_num_threads(1)


@pytest.mark.shared
def test_mc_conctd_on_fuel_moisture(shared_dir):
    d = load_fuel_moisture(shared_dir / "data" / "fuel-moisture")
    assert d.X.shape == (2313, 3, 18) and d.is_test.sum() == 735
    tr, te = ~d.is_test, d.is_test
    model = fit(d.X[tr], d.y[tr], method="mc-conctd", groups=d.site[tr], seed=0, mc_samples=30)
    p = model.predict(d.X[te])
    r = evaluate(d.y[te], p.mean, p.sigma, p.lower, p.upper)
    # Presto paper (arXiv 2304.14065, Table 10): linear regression on raw inputs 28.20 RMSE (LFMC %)
    assert r.rmse < 31.0
    assert 0.85 <= r.picp <= 0.95  # conformal 90% interval on unseen sites
    assert r.spearman_sigma_abs_error > 0.2  # sigma ranks errors
    assert r.nll < np.log(d.y[te].std()) + 0.5 * np.log(
        2 * np.pi * np.e
    )  # beats a constant Gaussian of the test spread
    assert 0 < model.learned_alpha[0] < 1
