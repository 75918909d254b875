"""Temporal-dropout layers, batched MC inference, fit/predict/save on synthetic sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.uncertainty import fit
from pipeline.uncertainty.card import load_model, save_model
from pipeline.uncertainty.data import split_indices
from pipeline.uncertainty.layers import ConcreteTemporalDropout, TemporalDropout, set_mc
from pipeline.uncertainty.mc import predict_moments
from pipeline.uncertainty.metrics import picp, r2
from pipeline.uncertainty.network import NetworkConfig, SequenceRegressor
from pipeline.uncertainty.train import TrainConfig, mixture_log_likelihood, train_network

torch.set_num_threads(1)


def synthetic(n: int = 600, t: int = 5, f: int = 3, seed: int = 0, missing: float = 0.1):
    """y = mean over observed steps of (x0 + 0.5 x1²) + noise; some whole steps missing (NaN)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, f))
    drop = rng.random((n, t)) < missing
    drop[:, -1] = False
    X[drop] = np.nan
    signal = np.nanmean(X[..., 0] + 0.5 * X[..., 1] ** 2, axis=1)
    y = 5 * signal + 100 + rng.normal(0, 0.5, n)
    return X, y


def test_temporal_dropout_drops_whole_steps_at_rate_alpha():
    torch.manual_seed(0)
    layer = TemporalDropout(n_features=4, alpha=0.3, fill=-9.0).train()
    x, v = torch.randn(4000, 6, 4), torch.ones(4000, 6, 4)
    xd, vd = layer(x, v)
    dropped = vd[..., 0] == 0
    assert torch.all((vd == 0) == dropped[..., None])  # all features of a step together
    assert torch.all(xd[dropped] == -9.0) and torch.equal(xd[~dropped], x[~dropped])
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.01)
    layer.eval()
    assert layer(x, v)[0] is x  # deterministic network in eval mode
    set_mc(layer, True)
    assert (layer(x, v)[1] == 0).any()


def test_per_group_temporal_dropout():
    torch.manual_seed(1)
    layer = TemporalDropout(n_features=3, alpha=0.5, feature_groups=[0, 0, 1]).train()
    _, vd = layer(torch.zeros(2000, 4, 3), torch.ones(2000, 4, 3))
    assert torch.equal(vd[..., 0], vd[..., 1])
    assert not torch.equal(vd[..., 0], vd[..., 2])
    with pytest.raises(ValueError, match="feature_groups has 2 entries"):
        TemporalDropout(3, 0.1, feature_groups=[0, 1])
    with pytest.raises(ValueError, match="alpha must be in"):
        TemporalDropout(3, 1.0)


def test_concrete_mask_relaxes_bernoulli_and_regulariser_closed_form():
    torch.manual_seed(2)
    layer = ConcreteTemporalDropout(n_features=2, init_alpha=0.2, temperature=0.01).train()
    _, vd = layer(torch.zeros(20000, 3, 2), torch.ones(20000, 3, 2))
    p = 1 - vd[..., 0]
    assert ((p < 0.01) | (p > 0.99)).float().mean() > 0.95  # nearly binary at low temperature
    assert p.mean().item() == pytest.approx(0.2, abs=0.01)
    w = torch.arange(12.0).reshape(3, 4)  # [H, 2F]
    a = 0.2
    w_sq = float((w**2).sum())
    expected = 1e-3 * w_sq / (1 - a) + 0.5 * 3 * (a * math.log(a) + (1 - a) * math.log(1 - a))
    assert layer.regularizer(w, n_steps=3, weight_reg=1e-3, dropout_reg=0.5).item() == pytest.approx(expected, rel=1e-5)
    # the gradient reaches the logit through the relaxed mask
    layer.zero_grad()
    xd, _ = layer(torch.ones(64, 3, 2), torch.ones(64, 3, 2))
    xd.sum().backward()
    assert layer.logit_alpha.grad is not None and layer.logit_alpha.grad.abs().item() > 0


def test_mc_draws_all_masks_in_one_forward_call_and_decomposes_variance():
    net = SequenceRegressor(NetworkConfig(n_features=3, method="mc-td", alpha=0.4, hidden=8))
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    x, v = np.random.default_rng(0).normal(size=(10, 4, 3)), np.ones((10, 4, 3))
    m = predict_moments([net], x, v, n_samples=50)
    assert len(calls) == 1
    assert np.all(m.var_epistemic > 0) and np.all(m.var_aleatoric > 0)
    # deterministic net: one pass, zero epistemic variance, aleatoric = predicted variance
    det = SequenceRegressor(NetworkConfig(n_features=3, method="deterministic", hidden=8)).eval()
    md = predict_moments([det], x, v, n_samples=1)
    with torch.no_grad():
        mean, var = det(torch.tensor(x, dtype=torch.float32), torch.tensor(v, dtype=torch.float32))
    np.testing.assert_allclose(md.mean, mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(md.var_aleatoric, var.numpy(), rtol=1e-6)
    assert np.all(md.var_epistemic == 0)
    # an ensemble of two: epistemic variance = squared half-difference of the member means
    det2 = SequenceRegressor(NetworkConfig(n_features=3, method="deterministic", hidden=8)).eval()
    me = predict_moments([det, det2], x, v, n_samples=1)
    md2 = predict_moments([det2], x, v, n_samples=1)
    np.testing.assert_allclose(me.var_epistemic, ((md.mean - md2.mean) / 2) ** 2, rtol=1e-5, atol=1e-10)


def test_backbone_dropout_trains_but_only_mc_dropout_samples_it_at_inference():
    x, v = np.random.default_rng(1).normal(size=(20, 4, 3)), np.ones((20, 4, 3))
    td0 = SequenceRegressor(NetworkConfig(n_features=3, method="mc-td", alpha=0.0, dropout=0.5, hidden=8))
    assert np.all(predict_moments([td0], x, v, n_samples=20).var_epistemic == 0)
    mcd = SequenceRegressor(NetworkConfig(n_features=3, method="mc-dropout", dropout=0.5, hidden=8))
    assert np.all(predict_moments([mcd], x, v, n_samples=20).var_epistemic > 0)
    td0.train()  # in training the backbone dropout of every method samples
    xt, vt = torch.tensor(x, dtype=torch.float32), torch.tensor(v, dtype=torch.float32)
    assert not torch.equal(td0(xt, vt)[0], td0(xt, vt)[0])


def test_mixture_log_likelihood_matches_scipy():
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    mean, var, y = rng.normal(size=(7, 11)), rng.uniform(0.2, 2.0, size=(7, 11)), rng.normal(size=11)
    expected = np.mean(np.log(np.mean(norm.pdf(y, mean, np.sqrt(var)), axis=0))) + 0.5 * math.log(2 * math.pi)
    got = mixture_log_likelihood(*(torch.tensor(a) for a in (mean, var, y)))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_heldout_alpha_objective_moves_only_alpha_on_validation_data():
    X, y = synthetic(n=300)
    z = np.nan_to_num((X - np.nanmean(X, axis=(0, 1))) / np.nanstd(X, axis=(0, 1)))
    valid = np.isfinite(X).astype(np.float64)
    yz = (y - y.mean()) / y.std()
    tr, va = slice(0, 200), slice(200, 300)

    def net() -> SequenceRegressor:
        torch.manual_seed(0)
        return SequenceRegressor(NetworkConfig(n_features=3, method="mc-conctd", alpha=0.2, hidden=8))

    # with the weights' learning rate ~0 only the held-out steps change anything, and only alpha
    frozen, start = net(), net()
    train_network(
        frozen,
        (z[tr], valid[tr], yz[tr]),
        (z[va], valid[va], yz[va]),
        TrainConfig(epochs=3, patience=3, lr=1e-12, alpha_objective="heldout"),
        seed=0,
    )
    for (name, a), (_, b) in zip(frozen.named_parameters(), start.named_parameters(), strict=True):
        if name.endswith("logit_alpha"):
            assert not torch.allclose(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="alpha_objective"):
        TrainConfig(alpha_objective="validation")


def test_group_split_keeps_groups_whole():
    groups = np.repeat(np.arange(20), 10)
    tr, va, ca = split_indices(200, (0.15, 0.2), seed=0, groups=groups)
    assert len(set(groups[tr]) & set(groups[va])) == 0 and len(set(groups[tr]) & set(groups[ca])) == 0
    assert sorted(np.concatenate([tr, va, ca])) == list(range(200))


@pytest.mark.parametrize(
    "method,encoder", [("mc-conctd", "gru"), ("mc-td", "transformer"), ("mc-dropout", "gru"), ("deterministic", "gru")]
)
def test_fit_learns_and_intervals_cover(method, encoder):
    X, y = synthetic(n=400)
    Xt, yt = synthetic(n=400, seed=1)
    model = fit(X, y, method=method, encoder=encoder, hidden=32, epochs=30, patience=10, seed=0, mc_samples=20)
    p = model.predict(Xt)
    assert r2(yt, p.mean) > 0.8
    assert 0.84 <= picp(yt, p.lower, p.upper) <= 0.96
    cal = model.calibration
    assert np.allclose(
        p.sigma**2, (cal.aleatoric_scale * p.sigma_aleatoric) ** 2 + (cal.epistemic_scale * p.sigma_epistemic) ** 2
    )
    assert "split-conformal" in p.calibration
    if method == "deterministic":
        assert np.all(p.sigma_epistemic == 0)
    else:  # a small learned alpha can leave some samples undropped in all passes
        assert np.mean(p.sigma_epistemic > 0) > 0.3
    if method == "mc-conctd":
        assert model.learned_alpha is not None and 0 < model.learned_alpha[0] < 1
        assert model.describe()["alpha"] == model.learned_alpha


def test_ensemble_and_save_load_roundtrip(tmp_path):
    X, y = synthetic(n=300)
    model = fit(X, y, method="ensemble", n_members=2, hidden=16, epochs=30, patience=10, seed=0)
    assert len(model.networks) == 2
    folder = save_model(model, tmp_path / "m")
    loaded = load_model(folder)[0]
    a, b = model.predict(X[:50]), loaded.predict(X[:50])
    for k in a.FIELDS:
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-6)
    assert loaded.describe() == model.describe()


def test_xarray_inputs_and_prediction_dataset():
    X, y = synthetic(n=300)
    da = xr.DataArray(X, dims=("sample", "time", "feature"), coords={"sample": np.arange(300) + 1000})
    model = fit(
        da.transpose("time", "sample", "feature"),
        xr.DataArray(y, dims="sample"),
        method="deterministic",
        hidden=8,
        epochs=5,
        patience=5,
    )
    ds = model.predict(da.isel(sample=slice(0, 20))).to_dataset()
    assert list(ds["sample"].values) == list(range(1000, 1020))
    assert set(ds.data_vars) == {"mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper"}


def test_bad_inputs_are_named():
    X, y = synthetic(n=100)
    with pytest.raises(ValueError, match="unknown method 'bayes'"):
        fit(X, y, method="bayes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y has 99 values but X has 100"):
        fit(X, y[:-1])
    with pytest.raises(ValueError, match="3-D"):
        fit(X[:, 0], y)
    with pytest.raises(ValueError, match="mask shape"):
        fit(X, y, mask=np.ones((100, 2)))
    with pytest.raises(TypeError, match="unknown options: colour"):
        fit(X, y, colour="red")
    with pytest.raises(ValueError, match="y contains NaN"):
        fit(X, np.full(100, np.nan))
    model = fit(X, y, method="deterministic", hidden=8, epochs=2, patience=2)
    with pytest.raises(ValueError, match="X has 4 features but the model was fitted on 3"):
        model.predict(np.zeros((5, 5, 4)))
