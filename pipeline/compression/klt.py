"""Karhunen–Loève transform (PCA) across bands, in numpy, float64.

Bands ``x`` (band, ...) map to components ``y = W (x - mean)`` with ``W`` orthonormal (rows are
eigenvectors of the band covariance, strongest first), so squared errors are the same in both
domains and one quantisation step serves every component. Component ranges are bounded from a
fixed physical box ``[lo, hi]`` per band through ``W``, not from the data.

``W`` is either one matrix (component, band) for a whole chunk or one per time step (time,
component, band; :func:`fit_frame_rotations`): each date's haze, illumination, clouds and season give
it its own band covariance. A per-date rotation is stored as the angles of its Givens factors, each a
12-bit integer (:data:`ANGLE_BITS`), and rebuilt from them on both sides, so it stays exactly
orthonormal and costs about 10 bytes a date in the header. Whether rotations per date pay is
predicted per chunk (:func:`frame_rotation_saving`): they fit each date better but, where the spectra
hardly change, only move the components from date to date and cost the codec's temporal prediction.
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


#: bits of each Givens angle of a per-date rotation (a step of 2 pi / 4096, 1.5 mrad)
ANGLE_BITS = 12


def _givens_planes(n: int) -> list[tuple[int, int, int]]:
    """``(p, q, column)`` of the Givens factors of an ``n x n`` rotation, in the order they are found."""
    return [(i - 1, i, j) for j in range(n - 1) for i in range(n - 1, j, -1)]


def angle_codes(matrix: np.ndarray, bits: int = ANGLE_BITS) -> np.ndarray:
    """``n (n - 1) / 2`` integer codes (0 .. 2**bits - 1) of the Givens angles of a rotation (det +1).

    Givens rotations in planes ``(p, q)`` zero ``matrix`` below its diagonal column by column; what
    is left of a rotation is the identity, so ``matrix`` is the product of those factors
    (:func:`rotation_from_codes`).
    """
    r = np.array(matrix, dtype=np.float64)
    angles = []
    for p, q, j in _givens_planes(len(r)):
        theta = np.arctan2(r[q, j], r[p, j])
        c, s = np.cos(theta), np.sin(theta)
        r[p], r[q] = c * r[p] + s * r[q], -s * r[p] + c * r[q]
        angles.append(theta)
    scale = (1 << bits) / (2 * np.pi)
    return np.rint(np.asarray(angles) * scale).astype(np.int64) % (1 << bits)


def rotation_from_codes(codes: np.ndarray, n: int, bits: int = ANGLE_BITS) -> np.ndarray:
    """The ``n x n`` rotation of Givens angle ``codes`` (:func:`angle_codes`); exactly orthonormal."""
    w = np.eye(n)
    for (p, q, _), code in zip(_givens_planes(n), np.asarray(codes).reshape(-1), strict=True):
        theta = float(code) * 2 * np.pi / (1 << bits)
        c, s = np.cos(theta), np.sin(theta)
        w[:, p], w[:, q] = c * w[:, p] + s * w[:, q], -s * w[:, p] + c * w[:, q]
    return w


def spatial_difference_covariance(frame: np.ndarray, max_samples: int = 50_000) -> np.ndarray:
    """Band covariance (band, band) of the horizontal and vertical first differences of ``frame``
    (band, y, x), averaged, from an evenly strided subsample of at most ``max_samples`` of each."""
    n = frame.shape[0]
    v = frame.astype(np.float64)
    covs = []
    for diff in (v[:, :, 1:] - v[:, :, :-1], v[:, 1:, :] - v[:, :-1, :]):
        flat = diff.reshape(n, -1)
        if flat.shape[1] > 1:
            covs.append(np.atleast_2d(np.cov(flat[:, :: max(1, flat.shape[1] // max_samples)])))
    return np.mean(covs, axis=0) if covs else np.zeros((n, n))


def fit_frame_rotations(
    x: np.ndarray, reference: np.ndarray, max_samples: int = 50_000
) -> tuple[np.ndarray, np.ndarray]:
    """Angle codes (time, n (n - 1) / 2) and rotations (time, component, band) of a KLT per time step of
    ``x`` (band, time, y, x).

    Each date's rotation diagonalises the band covariance of its spatial first differences
    (:func:`spatial_difference_covariance`), strongest component first: what the codec's intra and
    inter prediction leave is closer to those differences than to the raw values, whose covariance a
    date's bright clouds or one land cover can dominate (on the Romania cube this fit codes better than a
    per-date fit on raw values at every rate measured: ``python -m benchmarks compression-settings --only
    klt``). A date with no spatial variation keeps
    the ``reference`` rotation (the chunk's KLT). Rows take the signs that match the ``reference``
    rows, so components keep their sign from date to date and the codec's temporal prediction still
    works; the weakest row's sign makes the determinant +1. The rotations are the ones rebuilt from
    the codes.
    """
    n, t = x.shape[:2]
    codes, rotations = [], []
    for frame in range(t):
        cov = spatial_difference_covariance(x[:, frame], max_samples)
        if np.trace(cov) > 0:
            eigval, eigvec = np.linalg.eigh(cov)
            w = eigvec[:, np.argsort(eigval)[::-1]].T
            w *= np.where(np.sum(w * reference, axis=1) < 0, -1.0, 1.0)[:, None]
        else:
            w = np.array(reference, dtype=np.float64)
        if np.linalg.det(w) < 0:
            w[-1] *= -1
        codes.append(angle_codes(w))
        rotations.append(rotation_from_codes(codes[-1], n))
    return np.asarray(codes).reshape(t, n * (n - 1) // 2), np.asarray(rotations)


#: bits per sample the per-date rotations must be predicted to save before ``klt_scope="auto"`` takes them
#: (:func:`frame_rotation_saving`): well under what real Sentinel-2 (Romania) chunks are predicted to save
#: (``python -m benchmarks compression-settings --only klt`` prints it per chunk) and above the synthetic demo
#: cube's, whose spectra barely change between dates
MIN_FRAME_ROTATION_SAVING = 0.05


def predicted_bits(components: np.ndarray, noise: float, block: int = 8) -> float:
    """Rough bits per sample of coding ``components`` (component, time, y, x) with a video codec.

    Each ``block`` x ``block`` block of each component is predicted from its left and upper
    neighbours (planar: left + up - upper-left) or from the same block on the previous date,
    whichever leaves the smaller mean squared residual ``e``, and costs ``0.5 log2(1 + e / noise)``
    bits a sample (the Gaussian rate at distortion ``noise``, in squared value units). Blocks tile
    the pixels that have a left and an upper neighbour. Only used to compare two transforms of the
    same values, not as a rate estimate.
    """
    c = components.astype(np.float32)
    h2, w2 = (c.shape[-2] - 1) // block * block, (c.shape[-1] - 1) // block * block
    if h2 == 0 or w2 == 0:
        return 0.0
    inner = c[..., 1 : h2 + 1, 1 : w2 + 1]

    def energy(residual: np.ndarray) -> np.ndarray:
        tiles = residual.reshape(*residual.shape[:2], h2 // block, block, w2 // block, block)
        return np.einsum("ctiajb,ctiajb->ctij", tiles, tiles) / (block * block)

    residual = energy(inner - c[..., 1 : h2 + 1, :w2] - c[..., :h2, 1 : w2 + 1] + c[..., :h2, :w2])
    if c.shape[1] > 1:
        residual[:, 1:] = np.minimum(residual[:, 1:], energy(inner[:, 1:] - inner[:, :-1]))
    return float(0.5 * np.log2(1 + residual.astype(np.float64) / noise).mean())


def frame_rotation_saving(
    x: np.ndarray,
    mean: np.ndarray,
    chunk: np.ndarray,
    frames: np.ndarray,
    value_range: tuple[float, float],
    window: int = 128,
) -> float:
    """Bits per sample one rotation per date (``frames``, time x component x band) is predicted to save
    over the ``chunk`` rotation on ``x`` (band, time, y, x): :func:`predicted_bits` of each on the central
    ``window`` x ``window`` pixels, at a distortion of (range / 1000)^2, a high-rate operating point of
    the codec on real Sentinel-2.

    Per-date rotations fit each date's spectra better, but where the spectra hardly change they only
    move the components from date to date, which costs the codec's temporal prediction.
    """
    lo, hi = value_range
    noise = ((hi - lo) / 1000) ** 2
    h, w = x.shape[-2:]
    top, left = max(0, (h - window) // 2), max(0, (w - window) // 2)
    crop = x[..., top : top + window, left : left + window]
    return predicted_bits(forward(crop, mean, chunk), noise) - predicted_bits(forward(crop, mean, frames), noise)


def frame_rotations_pay(
    x: np.ndarray, mean: np.ndarray, chunk: np.ndarray, frames: np.ndarray, value_range: tuple[float, float]
) -> bool:
    """Whether :func:`frame_rotation_saving` reaches :data:`MIN_FRAME_ROTATION_SAVING`."""
    return frame_rotation_saving(x, mean, chunk, frames, value_range) >= MIN_FRAME_ROTATION_SAVING


def _per_date(matrix: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``matrix[t] @ values[:, t]`` for every date: (time, row, col) and (col, time, ...) -> (row, time, ...)."""
    stacked = values.reshape(values.shape[0], values.shape[1], -1).transpose(1, 0, 2)
    return np.matmul(matrix, stacked).transpose(1, 0, 2).reshape(matrix.shape[1], *values.shape[1:])


def forward(x: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Components (component, ...) of bands ``x`` (band, ...); ``matrix`` (component, band), or
    (time, component, band) for ``x`` (band, time, ...)."""
    centred = x - mean.reshape((-1,) + (1,) * (x.ndim - 1))
    if matrix.ndim == 3:
        return _per_date(matrix, centred)
    return (matrix @ centred.reshape(x.shape[0], -1)).reshape(x.shape)


def inverse(y: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Bands (band, ...) of components ``y`` (component, ...); ``matrix`` as in :func:`forward`."""
    if matrix.ndim == 3:
        bands = _per_date(matrix.transpose(0, 2, 1), y)
    else:
        bands = (matrix.T @ y.reshape(y.shape[0], -1)).reshape(y.shape)
    return bands + mean.reshape((-1,) + (1,) * (y.ndim - 1))


def component_bounds(mean: np.ndarray, matrix: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum and maximum of each component over the box ``[lo, hi]^band`` (over every date's
    rotation for a (time, component, band) ``matrix``)."""
    a, b = matrix * (lo - mean), matrix * (hi - mean)
    low, high = np.minimum(a, b).sum(axis=-1), np.maximum(a, b).sum(axis=-1)
    return (low.min(axis=0), high.max(axis=0)) if matrix.ndim == 3 else (low, high)
