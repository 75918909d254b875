"""Karhunen–Loève transform (PCA) across bands, in numpy, float64.

Bands ``x`` (band, ...) map to components ``y = W (x - mean)`` with ``W`` orthonormal (rows are
eigenvectors of the band covariance, strongest first), so squared errors are the same in both
domains and one quantisation step serves every component. Component ranges are bounded from a
fixed physical box ``[lo, hi]`` per band through ``W``, not from the data.
"""
from __future__ import annotations

import numpy as np


def fit_klt(x: np.ndarray, max_samples: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Mean (band,) and matrix (component, band) of the KLT of ``x`` (band, ...), strongest component first.

    Uses an evenly strided subsample of at most ``max_samples`` pixels. Eigenvector signs are fixed
    (largest-magnitude entry positive) so the transform is deterministic.
    """
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    stride = max(1, flat.shape[1] // max_samples)
    sample = flat[:, ::stride]
    mean = sample.mean(axis=1)
    cov = np.cov(sample - mean[:, None]) if sample.shape[0] > 1 else np.atleast_2d(sample.var())
    eigval, eigvec = np.linalg.eigh(np.atleast_2d(cov))
    matrix = eigvec[:, np.argsort(eigval)[::-1]].T
    signs = np.sign(matrix[np.arange(matrix.shape[0]), np.abs(matrix).argmax(axis=1)])
    return mean, matrix * signs[:, None]


def compact(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to the shortest decimals that identify their float32 (about 8 digits).

    Encoder and decoder both use the rounded numbers, so the header stores them in a few bytes each
    and the inverse still uses exactly the transform the encoder applied; the rounding moves ``W``
    from orthonormal by about 1e-8, far below any lossy step.
    """
    flat = [float(str(v)) for v in np.asarray(values, dtype=np.float32).reshape(-1)]
    return np.asarray(flat, dtype=np.float64).reshape(np.shape(values))


def forward(x: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Components (component, ...) of bands ``x`` (band, ...)."""
    flat = x.reshape(x.shape[0], -1) - mean[:, None]
    return (matrix @ flat).reshape(x.shape)


def inverse(y: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Bands (band, ...) of components ``y`` (component, ...)."""
    flat = matrix.T @ y.reshape(y.shape[0], -1) + mean[:, None]
    return flat.reshape(y.shape)


def component_bounds(mean: np.ndarray, matrix: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum and maximum of each component over the box ``[lo, hi]^band``."""
    a, b = matrix * (lo - mean)[None, :], matrix * (hi - mean)[None, :]
    return np.minimum(a, b).sum(axis=1), np.maximum(a, b).sum(axis=1)
