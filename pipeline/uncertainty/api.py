"""Public entry point: ``fit(X, y, ...) -> UncertaintyModel`` and ``model.predict(X) -> Prediction``.

``fit`` standardises features and target, splits off validation (early stopping) and
calibration (post-hoc recalibration) sets, trains the network(s) of the chosen method and
calibrates the predictive distribution. ``predict`` draws the MC masks in one batched pass per
sample batch and returns mean, epistemic/aleatoric/total σ and the calibrated interval, in
target units. Models save as artefact folders, ``weights.safetensors`` + ``card.json`` (format 3,
see :mod:`pipeline.uncertainty.card`: ``save_model`` / ``load_model``); format-2 folders (``model.pt`` + ``model.json``) still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from pipeline.uncertainty.calibration import Calibration, CalibrationKind, calibrate
from pipeline.uncertainty.data import Standardizer, as_array, as_target, split_indices
from pipeline.uncertainty.mc import predict_moments
from pipeline.uncertainty.metrics import evaluate
from pipeline.uncertainty.network import Method, NetworkConfig, SequenceRegressor, group_ids
from pipeline.uncertainty.train import TrainConfig, TrainInfo, train_network

FORMAT_VERSION = 3  # 3: safetensors + card.json artefact; 2: model.pt + model.json (still read)


@dataclass
class FitOptions:
    """Settings of :func:`fit` beyond the network and optimiser (see :class:`NetworkConfig`, :class:`TrainConfig`)."""

    mc_samples: int = 50
    n_members: int = 5
    validation_fraction: float = 0.15
    calibration_fraction: float = 0.2
    calibration: CalibrationKind = "conformal"
    coverage: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mc_samples < 2:
            raise ValueError("mc_samples must be >= 2 for Monte-Carlo methods")
        if self.n_members < 2:
            raise ValueError("an ensemble needs n_members >= 2")
        if self.validation_fraction <= 0:
            raise ValueError("validation_fraction must be > 0 (early stopping needs a validation split)")
        if self.calibration != "none" and self.calibration_fraction <= 0:
            raise ValueError(f"calibration {self.calibration!r} needs calibration_fraction > 0")


@dataclass
class Prediction:
    """Predictions in target units, each ``[N]``.

    ``sigma_epistemic`` is the spread of the MC/ensemble means, ``sigma_aleatoric`` the mean
    predicted noise σ, ``sigma = sqrt((k_a σ_a)² + (k_e σ_e)²)`` the calibrated total (``k_a``, ``k_e``
    the variance-scaling factors; the two parts are reported unscaled) and ``[lower, upper]`` the calibrated interval of
    nominal ``coverage``. ``calibration`` says which recalibration produced them.
    """

    mean: np.ndarray
    sigma_epistemic: np.ndarray
    sigma_aleatoric: np.ndarray
    sigma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    coverage: float
    calibration: str
    sample: np.ndarray | None = None

    FIELDS = ("mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper")

    def to_dataset(self) -> xr.Dataset:
        """The six fields as an ``xarray.Dataset`` over ``sample``, with coverage and calibration attributes."""
        coords = {"sample": self.sample} if self.sample is not None else {}
        return xr.Dataset(
            {k: ("sample", getattr(self, k)) for k in self.FIELDS},
            coords=coords,
            attrs={"coverage": self.coverage, "calibration": self.calibration},
        )


@dataclass
class UncertaintyModel:
    """A fitted model: networks, standardiser, calibration and the settings that made them."""

    networks: list[SequenceRegressor]
    standardizer: Standardizer
    calibration: Calibration
    network_config: NetworkConfig
    train_config: TrainConfig
    options: FitOptions
    train_info: list[TrainInfo]
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> Method:
        return self.network_config.method

    @property
    def n_steps(self) -> int:
        """Number of time steps seen in training (inputs may differ; the encoders accept any T)."""
        return int(self.metadata.get("n_steps", 0))

    @property
    def learned_alpha(self) -> list[float] | None:
        """Learned drop rate per group, averaged over networks (mc-conctd), else ``None``."""
        alphas = [i.learned_alpha for i in self.train_info if i.learned_alpha is not None]
        return np.mean(alphas, axis=0).tolist() if alphas else None

    @property
    def stochastic(self) -> bool:
        """Whether prediction draws Monte-Carlo masks."""
        return self.method in ("mc-dropout", "mc-td", "mc-conctd")

    @property
    def passes(self) -> int:
        """Stochastic passes per network at prediction time (1 for deterministic nets)."""
        return self.options.mc_samples if self.stochastic else 1

    def predict_raw(
        self,
        X: np.ndarray | xr.DataArray,
        mask: np.ndarray | xr.DataArray | None = None,
        max_rows: int = 131072,
        mc_samples: int | None = None,
        seed: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated ``(mean, sigma_epistemic, sigma_aleatoric)`` in target units.

        ``mc_samples`` overrides the passes of MC methods; ``seed`` draws the MC masks from a
        ``torch.Generator`` of that seed: reproducible, torch's global RNG untouched, safe when
        threads share the model (``None``: the global RNG)."""
        if mc_samples is not None and mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2, got {mc_samples}")
        x, valid = as_array(X, mask)
        z, v = self.standardizer.transform(x, valid)
        passes = mc_samples if mc_samples is not None and self.stochastic else self.passes
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        m = predict_moments(self.networks, z, v, passes, max_rows=max_rows, generator=generator)
        s = self.standardizer
        return (m.mean * s.y_std + s.y_mean, np.sqrt(m.var_epistemic) * s.y_std, np.sqrt(m.var_aleatoric) * s.y_std)

    def predict(
        self,
        X: np.ndarray | xr.DataArray,
        mask: np.ndarray | xr.DataArray | None = None,
        max_rows: int = 131072,
        *,
        coverage: float | None = None,
        mc_samples: int | None = None,
        seed: int | None = None,
    ) -> Prediction:
        """Calibrated predictions for ``X (sample, time, feature)``; see :class:`Prediction`.

        ``coverage`` other than the calibration's is served by :meth:`Calibration.at` (conformal
        scores or Gaussian quantile); ``mc_samples`` and ``seed`` as in :meth:`predict_raw`."""
        cal = self.calibration if coverage is None else self.calibration.at(coverage)
        mean, se, sa = self.predict_raw(X, mask, max_rows, mc_samples, seed)
        sigma, lower, upper = cal.apply(mean, sa, se)
        sample = X["sample"].values if isinstance(X, xr.DataArray) and "sample" in X.coords else None
        return Prediction(mean, se, sa, sigma, lower, upper, cal.coverage, cal.describe(), sample)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: method, α (fixed or learned), passes, calibration, training info."""
        alpha = (
            self.learned_alpha
            if self.method == "mc-conctd"
            else (self.network_config.alpha if self.method == "mc-td" else None)
        )
        return {
            "method": self.method,
            "alpha": alpha,
            "mc_samples": self.passes,
            "members": len(self.networks),
            "calibration": self.calibration.describe(),
            "coverage": self.calibration.coverage,
            **{k: v for k, v in self.metadata.items() if k != "store_attrs"},
        }


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
    names = [
        set(NetworkConfig.__dataclass_fields__),
        set(TrainConfig.__dataclass_fields__),
        set(FitOptions.__dataclass_fields__),
    ]
    unknown = set(kwargs) - set[str]().union(*names) - {"n_features", "method"}
    if unknown:
        raise TypeError(f"fit() got unknown options: {', '.join(sorted(unknown))}")
    net_kw, train_kw, opt_kw = ({k: v for k, v in kwargs.items() if k in n} for n in names)
    return net_kw, train_kw, opt_kw


def fit(
    X: np.ndarray | xr.DataArray,
    y: np.ndarray | xr.DataArray,
    mask: np.ndarray | xr.DataArray | None = None,
    method: Method = "mc-conctd",
    groups: np.ndarray | None = None,
    feature_groups: list[str] | list[int] | None = None,
    **options: Any,
) -> UncertaintyModel:
    """Fit an uncertainty-aware sequence regressor on ``X (sample, time, feature)`` and ``y (sample)``.

    ``method``: ``"mc-conctd"`` (learned temporal-dropout rate, default), ``"mc-td"`` (fixed rate
    ``alpha``), ``"mc-dropout"`` (hidden-feature dropout ``dropout``), ``"deterministic"`` or
    ``"ensemble"`` (``n_members`` deterministic nets). ``mask``: True = observed (NaN in ``X``
    also counts as missing). ``groups``: per-sample group labels (e.g. site) so validation and
    calibration splits hold out whole groups. ``feature_groups``: per-feature group names/ids for
    per-group temporal dropout. Other keyword options are the fields of :class:`NetworkConfig`
    (encoder, hidden, layers, heteroscedastic, alpha, dropout, temperature, fill_value),
    :class:`TrainConfig` (epochs, patience, lr, regularizer_weight, ...) and :class:`FitOptions`
    (mc_samples, n_members, validation_fraction, calibration_fraction, calibration, coverage, seed).
    """
    net_kw, train_kw, opt_kw = _split_kwargs(options)
    opts, tcfg = FitOptions(**opt_kw), TrainConfig(**train_kw)
    x, valid = as_array(X, mask)
    target = as_target(y, x.shape[0])
    if feature_groups is not None and not all(isinstance(g, (int, np.integer)) for g in feature_groups):
        feature_groups = group_ids([str(g) for g in feature_groups])
    ncfg = NetworkConfig(
        n_features=x.shape[2],
        method=method,
        feature_groups=None if feature_groups is None else [int(g) for g in feature_groups],
        **net_kw,
    )
    f_cal = opts.calibration_fraction if opts.calibration != "none" else 0.0
    tr, va, ca = split_indices(x.shape[0], (opts.validation_fraction, f_cal), opts.seed, groups)
    std = Standardizer.fit(x[tr], target[tr], ncfg.fill_value)
    z, v = std.transform(x, valid)
    yz = (target - std.y_mean) / std.y_std
    n_nets = opts.n_members if method == "ensemble" else 1
    nets, infos = [], []
    for k in range(n_nets):
        torch.manual_seed(opts.seed * 1000 + k)
        net = SequenceRegressor(ncfg)
        infos.append(train_network(net, (z[tr], v[tr], yz[tr]), (z[va], v[va], yz[va]), tcfg, opts.seed * 1000 + k))
        nets.append(net)
    model = UncertaintyModel(
        nets,
        std,
        calibrate(np.empty(0), np.empty(0), np.empty(0), "none", opts.coverage),
        ncfg,
        tcfg,
        opts,
        infos,
        {
            "n_steps": int(x.shape[1]),
            "n_train": int(tr.size),
            "n_validation": int(va.size),
            "n_calibration": int(ca.size),
        },
    )
    if opts.calibration != "none":
        mean, se, sa = model.predict_raw(x[ca], valid[ca])
        model.calibration = calibrate(target[ca], mean, sa, opts.calibration, opts.coverage, sigma_epistemic=se)
    model.metrics = {
        name: split_metrics(model, x[idx], valid[idx], target[idx], opts.seed)
        for name, idx in (("validation", va), ("calibration", ca))
        if idx.size >= 2
    }
    return model


def split_metrics(
    model: UncertaintyModel, x: np.ndarray, valid: np.ndarray, y: np.ndarray, seed: int
) -> dict[str, Any]:
    """Metrics (target units; see :func:`~pipeline.uncertainty.metrics.evaluate`) of the calibrated
    predictions on one split, with its size ``n``; non-finite values as ``None``. The validation split
    also chose the early-stopping epoch (and α for mc-conctd), the calibration split the calibration,
    so both are optimistic next to a test set."""
    p = model.predict(x, valid, seed=seed)
    report = evaluate(y, p.mean, p.sigma, p.lower, p.upper).as_dict()
    return {"n": int(y.size), **{k: (float(v) if np.isfinite(v) else None) for k, v in report.items()}}
