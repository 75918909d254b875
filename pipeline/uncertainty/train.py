"""Training of one :class:`SequenceRegressor` with Gaussian NLL and early stopping.

Loss per batch: mean Gaussian NLL of the standardised target (``½ log σ² + (y - μ)² / 2σ²``)
plus, for MC-ConcTD, the Concrete-Dropout penalty of the input layer. After every epoch the
validation split is scored by the NLL of the predictive mixture (MC for stochastic methods)
and the best epoch's weights are kept; training stops after ``patience`` epochs without gain.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from pipeline.uncertainty.mc import predict_moments
from pipeline.uncertainty.network import SequenceRegressor


@dataclass
class TrainConfig:
    """Optimiser and early-stopping settings.

    ``dropout_reg`` / ``weight_reg`` are the Concrete-Dropout coefficients; ``None`` gives Gal et
    al.'s ``2 / N`` and ``l² / N`` (``l = 1e-2``) with ``N`` training samples, each multiplied by
    ``regularizer_weight``. ``alpha_lr`` is the learning rate of the Concrete logits (larger than
    ``lr``: their gradient is small and noisy, and the rate must move within early-stopped training).

    ``alpha_objective`` says what the Concrete logits follow:

    * ``"elbo"``: the training loss plus the Concrete-Dropout penalty, as in Gal et al. 2017;
      on gap-free or short series the training likelihood drives α towards 0.
    * ``"heldout"``: the log-likelihood of the validation split under the Monte-Carlo mixture of
      ``alpha_mc_samples`` relaxed masks, plus the same penalty as a prior. The network weights
      still learn only from the training split; α is fitted, by gradient through the Concrete
      relaxation, to the rate whose MC spread best explains unseen samples.
    """

    epochs: int = 300
    patience: int = 25
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_mc_samples: int = 10
    alpha_lr: float = 3e-2
    regularizer_weight: float = 1.0
    dropout_reg: float | None = None
    weight_reg: float | None = None
    alpha_objective: Literal["elbo", "heldout"] = "heldout"
    alpha_mc_samples: int = 16
    alpha_steps: int = 4

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.val_mc_samples < 1:
            raise ValueError("epochs, patience, batch_size and val_mc_samples must be >= 1")
        if self.lr <= 0 or self.alpha_lr <= 0 or self.weight_decay < 0 or self.regularizer_weight < 0:
            raise ValueError("lr and alpha_lr must be > 0; weight_decay and regularizer_weight must be >= 0")
        if self.alpha_objective not in ("elbo", "heldout"):
            raise ValueError(f"unknown alpha_objective {self.alpha_objective!r}; choose 'elbo' or 'heldout'")
        if self.alpha_mc_samples < 2 or self.alpha_steps < 1:
            raise ValueError("alpha_mc_samples must be >= 2 and alpha_steps >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainInfo:
    """What happened during training: epochs run, best epoch, its validation NLL, learned α."""

    epochs_run: int
    best_epoch: int
    best_val_nll: float
    learned_alpha: list[float] | None

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_nll_loss(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian NLL without the constant ``½ log 2π``."""
    return 0.5 * (torch.log(var) + (y - mean) ** 2 / var).mean()


def mixture_nll(net: SequenceRegressor, x: np.ndarray, valid: np.ndarray, y: np.ndarray, n_samples: int) -> float:
    """NLL (with ``½ log 2π``) of ``y`` under the moment-matched predictive Gaussian of ``net``."""
    m = predict_moments([net], x, valid, n_samples)
    var = m.var_epistemic + m.var_aleatoric
    return float(np.mean(0.5 * (math.log(2 * math.pi) + np.log(var) + (y - m.mean) ** 2 / var)))


def mixture_log_likelihood(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean log-likelihood of ``y [B]`` under the uniform mixture of ``[L, B]`` Gaussians (no ``½ log 2π``)."""
    log_p = -0.5 * (torch.log(var) + (y - mean) ** 2 / var)
    return (torch.logsumexp(log_p, dim=0) - math.log(mean.shape[0])).mean()


def _heldout_alpha_step(
    net: SequenceRegressor,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    n_steps: int,
    weight_reg: float,
    dropout_reg: float,
) -> None:
    """``cfg.alpha_steps`` updates of the Concrete logits on the validation mixture likelihood."""
    x, v, y = val
    n_mc = cfg.alpha_mc_samples
    for _ in range(cfg.alpha_steps):
        mean, var = net(x.repeat(n_mc, 1, 1), v.repeat(n_mc, 1, 1))
        loss = -mixture_log_likelihood(mean.view(n_mc, -1), var.view(n_mc, -1), y) + net.concrete_regularizer(
            n_steps, weight_reg, dropout_reg
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def train_network(
    net: SequenceRegressor,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainConfig,
    seed: int,
) -> TrainInfo:
    """Fit ``net`` in place on standardised ``train = (x, valid, y)``; early-stop on ``val``."""
    torch.manual_seed(seed)
    x, v, y = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in train)
    n, n_steps = x.shape[0], x.shape[1]
    stochastic = net.config.method in ("mc-dropout", "mc-td", "mc-conctd")
    n_val_samples = cfg.val_mc_samples if stochastic else 1
    dropout_reg = cfg.regularizer_weight * (cfg.dropout_reg if cfg.dropout_reg is not None else 2.0 / n)
    weight_reg = cfg.regularizer_weight * (cfg.weight_reg if cfg.weight_reg is not None else 1e-4 / n)
    concrete = [p for name, p in net.named_parameters() if name.endswith("logit_alpha")]
    others = [p for name, p in net.named_parameters() if not name.endswith("logit_alpha")]
    heldout = bool(concrete) and cfg.alpha_objective == "heldout"
    groups = [{"params": others, "weight_decay": cfg.weight_decay}]
    if concrete and not heldout:
        groups.append({"params": concrete, "weight_decay": 0.0, "lr": cfg.alpha_lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    alpha_opt = torch.optim.Adam(concrete, lr=cfg.alpha_lr) if heldout else None
    val_x, val_v, val_y = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in val)
    val_t = (val_x, val_v, val_y)
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state, epoch = math.inf, 0, copy.deepcopy(net.state_dict()), 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            mean, var = net(x[idx], v[idx])
            loss = gaussian_nll_loss(mean, var, y[idx]) + net.concrete_regularizer(n_steps, weight_reg, dropout_reg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if alpha_opt is not None:
            _heldout_alpha_step(net, val_t, alpha_opt, cfg, n_steps, weight_reg, dropout_reg)
        score = mixture_nll(net, *val, n_val_samples)
        if score < best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return TrainInfo(epoch, best_epoch, best, net.learned_alpha())
