"""Stochastic layers: temporal dropout (fixed and Concrete) at the input, feature dropout inside.

Inputs of the temporal layers are ``x [B, T, F]`` (standardised feature values) and
``valid [B, T, F]`` (1 = observed, 0 = missing). A dropped unit (one time step of one sample,
or of one feature group) has its values replaced by ``fill`` and its valid flags set to 0, so a
dropped step looks exactly like a missing observation: ``x̂ = x ⊙ (1 - p) + fill · p``.

Each layer samples only when ``self.training`` or in Monte-Carlo mode, so ``model.eval()`` gives
the deterministic network. MC mode is either a flag on the modules (:func:`set_mc`) or, without
touching any module, a block of code in one thread (:func:`mc_mode`, optionally drawing the masks
from a ``torch.Generator``): threads that share a network then sample independently and
reproducibly, and torch's global RNG is left alone.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

_THREAD = threading.local()


@contextmanager
def mc_mode(generator: torch.Generator | None = None) -> Iterator[None]:
    """Monte-Carlo sampling of every :class:`StochasticLayer` run by this thread inside the block; the
    masks are drawn from ``generator`` when given (else from torch's global RNG). No module is changed."""
    previous = getattr(_THREAD, "mc", None)
    _THREAD.mc = (generator,)
    try:
        yield
    finally:
        _THREAD.mc = previous


def _thread_mc() -> tuple[torch.Generator | None] | None:
    return getattr(_THREAD, "mc", None)


class StochasticLayer(nn.Module):
    """Base of the layers that sample at training time and, in MC mode, at inference."""

    def __init__(self) -> None:
        super().__init__()
        self.mc = False

    @property
    def in_mc(self) -> bool:
        """MC mode: the module's flag (:func:`set_mc`) or this thread's :func:`mc_mode`."""
        return self.mc or _thread_mc() is not None

    @property
    def sampling(self) -> bool:
        return self.training or self.in_mc

    @property
    def generator(self) -> torch.Generator | None:
        """The generator of this thread's :func:`mc_mode` (``None``: torch's global RNG)."""
        state = _thread_mc()
        return None if state is None or self.training else state[0]


def set_mc(module: nn.Module, on: bool) -> None:
    """Switch Monte-Carlo sampling of every :class:`StochasticLayer` in ``module`` on or off."""
    for m in module.modules():
        if isinstance(m, StochasticLayer):
            m.mc = on


def _group_index(feature_groups: Sequence[int] | None, n_features: int) -> tuple[torch.Tensor, int]:
    """Feature -> group id (0..G-1) as a long tensor, and G. ``None`` means one group (whole steps)."""
    if feature_groups is None:
        return torch.zeros(n_features, dtype=torch.long), 1
    idx = torch.as_tensor(list(feature_groups), dtype=torch.long)
    if idx.numel() != n_features:
        raise ValueError(f"feature_groups has {idx.numel()} entries but there are {n_features} features")
    groups = torch.unique(idx)
    if idx.min() < 0 or not torch.equal(groups, torch.arange(groups.numel())):
        raise ValueError("feature_groups must number the groups 0..G-1 with every group used")
    return idx, int(groups.numel())


def _apply_drop(
    x: torch.Tensor, valid: torch.Tensor, p: torch.Tensor, index: torch.Tensor, fill: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand per-group drop weights ``p [B, T, G]`` to features and blend in ``fill``."""
    pf = p.index_select(-1, index.to(p.device))
    return x * (1 - pf) + fill * pf, valid * (1 - pf)


class TemporalDropout(StochasticLayer):
    """Drop whole time steps (per sample, optionally per feature group) with fixed rate ``alpha``.

    ``p_t ~ Bernoulli(alpha)`` independently per (sample, step, group); no rescaling.
    """

    index: torch.Tensor  # a buffer: the feature group of each feature

    def __init__(
        self, n_features: int, alpha: float, fill: float = 0.0, feature_groups: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"temporal dropout rate alpha must be in [0, 1), got {alpha}")
        self.alpha, self.fill = float(alpha), float(fill)
        index, self.n_groups = _group_index(feature_groups, n_features)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.sampling or self.alpha == 0.0:
            return x, valid
        p = torch.bernoulli(
            torch.full((x.shape[0], x.shape[1], self.n_groups), self.alpha, device=x.device, dtype=x.dtype),
            generator=self.generator,
        )
        return _apply_drop(x, valid, p, self.index, self.fill)


class ConcreteTemporalDropout(StochasticLayer):
    """Temporal dropout with a learned rate per model (one group) or per feature group.

    Training uses the Concrete relaxation ``p̃ = σ((logit α + log u - log(1 - u)) / τ)``,
    ``u ~ U(0, 1)``; MC inference draws hard ``Bernoulli(α)`` masks. :meth:`regularizer` is the
    Concrete-Dropout penalty (Gal, Hron & Kendall 2017) for the weights that read this input.
    """

    index: torch.Tensor  # a buffer: the feature group of each feature

    def __init__(
        self,
        n_features: int,
        init_alpha: float = 0.1,
        temperature: float = 0.1,
        fill: float = 0.0,
        feature_groups: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < init_alpha < 1.0:
            raise ValueError(f"initial alpha must be in (0, 1), got {init_alpha}")
        if temperature <= 0:
            raise ValueError(f"Concrete temperature must be > 0, got {temperature}")
        self.temperature, self.fill = float(temperature), float(fill)
        index, self.n_groups = _group_index(feature_groups, n_features)
        self.register_buffer("index", index, persistent=False)
        self.logit_alpha = nn.Parameter(torch.full((self.n_groups,), math.log(init_alpha / (1 - init_alpha))))

    @property
    def alpha(self) -> torch.Tensor:
        """Drop probability per group, shape ``[G]``."""
        return torch.sigmoid(self.logit_alpha)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.sampling:
            return x, valid
        shape = (x.shape[0], x.shape[1], self.n_groups)
        if self.training:
            eps = torch.finfo(x.dtype).eps
            u = torch.rand(shape, device=x.device, dtype=x.dtype).clamp(eps, 1 - eps)
            p = torch.sigmoid((self.logit_alpha + torch.log(u) - torch.log1p(-u)) / self.temperature)
        else:
            p = torch.bernoulli(self.alpha.to(x.dtype).expand(shape), generator=self.generator)
        return _apply_drop(x, valid, p, self.index, self.fill)

    def regularizer(
        self, input_weight: torch.Tensor, n_steps: int, weight_reg: float, dropout_reg: float
    ) -> torch.Tensor:
        """Concrete-Dropout penalty, summed over groups.

        ``weight_reg · ||W_g||² / (1 - α_g) + dropout_reg · K · (α_g log α_g + (1 - α_g) log(1 - α_g))``
        where ``W_g`` are the columns of ``input_weight [H, 2F]`` (values then valid flags) that read
        group ``g`` and ``K = n_steps`` is the number of Bernoulli units per group and sample. The second
        term is minus the Bernoulli entropy: it pulls α towards 0.5, the first pulls it towards 0.
        Gal et al. use ``weight_reg = l²/N`` and ``dropout_reg = 2/N`` (N training samples).
        """
        a = self.alpha
        n_feat = self.index.numel()
        w_sq = input_weight.pow(2).sum(0)
        w_sq = w_sq[:n_feat] + w_sq[n_feat : 2 * n_feat]
        per_group_w = torch.zeros(self.n_groups, device=a.device, dtype=a.dtype).index_add(0, self.index, w_sq)
        neg_entropy = a * torch.log(a) + (1 - a) * torch.log1p(-a)
        return (weight_reg * per_group_w / (1 - a) + dropout_reg * n_steps * neg_entropy).sum()


class FeatureDropout(StochasticLayer):
    """Standard (inverted) dropout of hidden features with rate ``p``.

    It always samples during training (regularisation); ``at_inference=True`` also samples it in
    Monte-Carlo mode, which makes it the MC-Dropout baseline's source of spread.
    """

    def __init__(self, p: float, at_inference: bool = True) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p, self.at_inference = float(p), bool(at_inference)

    @property
    def sampling(self) -> bool:
        return self.training or (self.in_mc and self.at_inference)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gen = self.generator
        if gen is None or not self.sampling or self.p == 0:
            return nn.functional.dropout(h, self.p, training=self.sampling and self.p > 0)
        keep = torch.empty_like(h).bernoulli_(1 - self.p, generator=gen)
        return h * keep / (1 - self.p)
