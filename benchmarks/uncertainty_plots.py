"""Diagnostic figures of the uncertainty benchmarks as PNG: reliability diagram and σ versus absolute error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: drawing leaves the caller's backend (e.g. Jupyter's) alone

from pipeline.uncertainty.metrics import coverage_curve, spearman


def reliability_diagram(y: np.ndarray, predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Observed vs nominal coverage of central Gaussian intervals, one line per ``name: (mu, sigma)``."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for name, (mu, sigma) in predictions.items():
        levels, observed = coverage_curve(y, mu, sigma)
        ax.plot(levels, observed, marker="o", ms=3, label=name)
    ax.set(xlabel="nominal coverage", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1), title="Reliability")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sigma_vs_error(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Scatter of predictive σ against |error|, with the ``|e| = z₀.₉ σ`` line and Spearman ρ."""
    err = np.abs(np.asarray(y) - np.asarray(mu))
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(sigma, err, s=6, alpha=0.5)
    s = np.linspace(0, float(np.max(sigma)), 50)
    ax.plot(s, 1.645 * s, "k--", lw=1, label="|error| = 1.645 σ (90% Gaussian)")
    ax.set(xlabel="predictive σ", ylabel="|error|", title=f"{title} Spearman ρ = {spearman(sigma, err):.2f}".strip())
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
