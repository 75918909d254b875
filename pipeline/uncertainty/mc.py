"""Monte-Carlo inference: L stochastic forward passes drawn in one batched pass per sample batch.

The batch is repeated L times along the batch dimension, so one forward call evaluates L masks
for every sample (no Python loop over MC samples). The L (mean, variance) pairs are combined as
a uniform Gaussian mixture: ``mean = E_l[μ_l]``, epistemic variance ``Var_l[μ_l]`` and aleatoric
variance ``E_l[σ²_l]`` (law of total variance).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.uncertainty.layers import mc_mode
from pipeline.uncertainty.network import SequenceRegressor


@dataclass
class MixtureMoments:
    """Per-sample moments, standardised target units: mean, epistemic and aleatoric variance ``[N]``."""

    mean: np.ndarray
    var_epistemic: np.ndarray
    var_aleatoric: np.ndarray


@torch.no_grad()
def mc_samples(
    net: SequenceRegressor,
    x: torch.Tensor,
    valid: torch.Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and variances ``[L, B]`` of ``n_samples`` stochastic passes, in one forward call.

    With ``n_samples == 1`` and no MC the network runs deterministically (eval mode). The masks come
    from ``generator`` when given, else from torch's global RNG; MC mode is this thread's
    (:func:`~pipeline.uncertainty.layers.mc_mode`), so threads may share ``net``.
    """
    if n_samples < 1:
        raise ValueError(f"the number of MC samples must be >= 1, got {n_samples}")
    if net.training:
        net.eval()  # a network being trained is not shared; a loaded one is in eval mode already
        try:
            return mc_samples(net, x, valid, n_samples, generator)
        finally:
            net.train()
    b = x.shape[0]
    with mc_mode(generator) if n_samples > 1 else nullcontext():
        mean, var = net(x.repeat(n_samples, 1, 1), valid.repeat(n_samples, 1, 1))
    return mean.view(n_samples, b), var.view(n_samples, b)


def predict_moments(
    nets: Sequence[SequenceRegressor],
    x: np.ndarray,
    valid: np.ndarray,
    n_samples: int,
    max_rows: int = 131072,
    generator: torch.Generator | None = None,
) -> MixtureMoments:
    """Mixture moments over ``len(nets)`` members × ``n_samples`` passes for ``x, valid [N, T, F]``.

    Samples are processed in batches such that one forward call sees at most ``max_rows``
    (sample × pass × step) rows, so memory stays bounded for any ``N``; ``n_samples`` is 1 for deterministic networks and ensemble members.
    ``generator``: where the MC masks come from (default: torch's global RNG).
    """
    if x.shape != valid.shape or x.ndim != 3:
        raise ValueError(f"x and valid must both be [N, T, F], got {x.shape} and {valid.shape}")
    step = max(1, max_rows // (n_samples * x.shape[1]))
    out = MixtureMoments(*(np.empty(x.shape[0], dtype=np.float64) for _ in range(3)))
    for start in range(0, x.shape[0], step):
        sl = slice(start, start + step)
        xb = torch.from_numpy(np.ascontiguousarray(x[sl], dtype=np.float32))
        vb = torch.from_numpy(np.ascontiguousarray(valid[sl], dtype=np.float32))
        means, variances = zip(*(mc_samples(n, xb, vb, n_samples, generator) for n in nets), strict=True)
        mu, var = torch.cat(means).double(), torch.cat(variances).double()
        out.mean[sl] = mu.mean(0).numpy()
        out.var_epistemic[sl] = mu.var(0, unbiased=False).numpy()
        out.var_aleatoric[sl] = var.mean(0).numpy()
    return out
