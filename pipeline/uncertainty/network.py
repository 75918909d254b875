"""Sequence regressors over per-time-step features: GRU or Transformer encoder + Gaussian head.

Input ``x [B, T, F]`` (standardised values, missing entries filled) and ``valid [B, T, F]``
(1 = observed). The network reads ``concat(x, valid) [B, T, 2F]``, so it knows which steps are
missing. Output: predictive mean and variance ``[B]`` in standardised target units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from pipeline.uncertainty.layers import ConcreteTemporalDropout, FeatureDropout, TemporalDropout

Method = Literal["deterministic", "mc-dropout", "mc-td", "mc-conctd", "ensemble"]
METHODS: tuple[Method, ...] = ("deterministic", "mc-dropout", "mc-td", "mc-conctd", "ensemble")
#: Smallest predictive variance (standardised units²), keeps the NLL finite.
MIN_VARIANCE = 1e-4


def as_method(name: str) -> Method:
    """``name`` (e.g. a command-line string) as a :data:`Method`; a ValueError naming the choices otherwise."""
    for method in METHODS:
        if name == method:
            return method
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


@dataclass
class NetworkConfig:
    """Architecture and stochastic-layer settings of one :class:`SequenceRegressor`.

    ``alpha`` is the temporal-dropout rate (mc-td) or its initial value (mc-conctd);
    ``dropout`` the hidden-feature dropout rate of the backbone: every method trains with it
    (regularisation), only mc-dropout also samples it at inference; ``feature_groups`` assigns each
    input feature a group id 0..G-1 for per-group temporal dropout (``None``: whole steps).
    """

    n_features: int
    method: Method = "mc-conctd"
    encoder: Literal["gru", "transformer"] = "gru"
    hidden: int = 64
    layers: int = 1
    heads: int = 4
    heteroscedastic: bool = True
    alpha: float = 0.1
    dropout: float = 0.1
    temperature: float = 0.1
    fill_value: float = 0.0
    feature_groups: list[int] | None = None

    def __post_init__(self) -> None:
        as_method(self.method)
        if self.encoder not in ("gru", "transformer"):
            raise ValueError(f"unknown encoder {self.encoder!r}; choose 'gru' or 'transformer'")
        if self.n_features < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("n_features, hidden and layers must be >= 1")
        if self.encoder == "transformer" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(n_steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """``[T, dim]`` sin/cos position table (Vaswani et al. 2017, base 10000)."""
    pos = torch.arange(n_steps, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_steps, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class SequenceRegressor(nn.Module):
    """Input temporal dropout -> input projection -> GRU/Transformer -> pooled -> Gaussian head."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        c = self.config = config
        f, h = c.n_features, c.hidden
        if c.method == "mc-td":
            self.input_dropout: nn.Module = TemporalDropout(f, c.alpha, c.fill_value, c.feature_groups)
        elif c.method == "mc-conctd":
            self.input_dropout = ConcreteTemporalDropout(f, c.alpha, c.temperature, c.fill_value, c.feature_groups)
        else:
            self.input_dropout = nn.Identity()
        mc_dropout = c.method == "mc-dropout"
        self.input_proj = nn.Linear(2 * f, h)
        if c.encoder == "gru":
            self.encoder: nn.Module = nn.GRU(h, h, num_layers=c.layers, batch_first=True)
        else:
            block = nn.TransformerEncoderLayer(
                h, c.heads, dim_feedforward=2 * h, dropout=0.0, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(block, c.layers, enable_nested_tensor=False)
        self.feature_dropout = FeatureDropout(c.dropout, at_inference=mc_dropout)
        self.head = nn.Sequential(
            nn.Linear(h, h),
            nn.ReLU(),
            FeatureDropout(c.dropout, at_inference=mc_dropout),
            nn.Linear(h, 2 if c.heteroscedastic else 1),
        )
        if not c.heteroscedastic:
            self.log_variance = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``[B]`` for ``x, valid [B, T, F]``."""
        if isinstance(self.input_dropout, nn.Identity):
            xd, vd = x, valid
        else:
            xd, vd = self.input_dropout(x, valid)
        h = self.input_proj(torch.cat([xd, vd], dim=-1))
        if self.config.encoder == "gru":
            _, last = self.encoder(h)
            pooled = last[-1]
        else:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device)
            pooled = self.encoder(h).mean(dim=1)
        out = self.head(self.feature_dropout(pooled))
        mean = out[:, 0]
        raw_var = out[:, 1] if self.config.heteroscedastic else self.log_variance.expand_as(mean)
        if self.config.heteroscedastic:
            var = nn.functional.softplus(raw_var) + MIN_VARIANCE
        else:
            var = torch.exp(raw_var) + MIN_VARIANCE
        return mean, var

    def concrete_regularizer(self, n_steps: int, weight_reg: float, dropout_reg: float) -> torch.Tensor:
        """The Concrete-Dropout penalty of the input layer (0 for other methods)."""
        if not isinstance(self.input_dropout, ConcreteTemporalDropout):
            return torch.zeros((), device=self.input_proj.weight.device)
        return self.input_dropout.regularizer(self.input_proj.weight, n_steps, weight_reg, dropout_reg)

    def learned_alpha(self) -> list[float] | None:
        """The learned drop rate per group (mc-conctd), else ``None``."""
        if isinstance(self.input_dropout, ConcreteTemporalDropout):
            return [float(a) for a in self.input_dropout.alpha.detach().cpu()]
        return None


def group_ids(names: Sequence[str]) -> list[int]:
    """Group ids 0..G-1 from per-feature group names, numbered in order of first appearance."""
    order: dict[str, int] = {}
    return [order.setdefault(n, len(order)) for n in names]
