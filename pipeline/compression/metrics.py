"""Quality and size metrics of a decompressed cube against its original.

Arrays are ``(band, time, y, x)`` in the data's physical unit; NaN marks missing values, which
every metric ignores. PSNR is ``10 log10(peak^2 / MSE)`` with the MSE pooled over all valid
samples and an explicit ``peak`` (e.g. 1.0 for reflectance, 10000 or 65535 for digital numbers).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

#: SSIM constants and Gaussian window of Wang et al. (2004): K1, K2, sigma 1.5 px, 11x11 support.
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _valid(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    if ref.shape != test.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {test.shape}")
    return ~(np.isnan(ref.astype(np.float64)) | np.isnan(test.astype(np.float64)))


def mse(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error over samples valid in both arrays."""
    ok = _valid(ref, test)
    if not ok.any():
        raise ValueError("no valid samples to compare")
    d = ref.astype(np.float64)[ok] - test.astype(np.float64)[ok]
    return float(np.mean(d * d))


def psnr(ref: np.ndarray, test: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB for signal peak ``peak`` (inf when identical)."""
    m = mse(ref, test)
    return float("inf") if m == 0 else float(10 * np.log10(peak * peak / m))


def ssim_2d(ref: np.ndarray, test: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM map (y, x) of two images (Wang et al. 2004, Gaussian window sigma 1.5, reflect borders)."""
    x, y = ref.astype(np.float64), test.astype(np.float64)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    f = lambda a: gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(ref: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Mean SSIM over all (band, time) frames and valid pixels; missing pixels take the reference value."""
    ok = _valid(ref, test)
    r = np.where(ok, ref, 0.0).astype(np.float64)
    t = np.where(ok, test, r).astype(np.float64)
    frames = r.reshape(-1, *r.shape[-2:]), t.reshape(-1, *t.shape[-2:]), ok.reshape(-1, *ok.shape[-2:])
    total, count = 0.0, 0
    for a, b, m in zip(*frames, strict=True):
        if m.any():
            total += float(ssim_2d(a, b, data_range)[m].sum())
            count += int(m.sum())
    return total / count


def spectral_angle(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean spectral angle (degrees) between band vectors (axis 0) of pixels valid in every band."""
    ok = _valid(ref, test).all(axis=0)
    a = ref.reshape(ref.shape[0], -1)[:, ok.ravel()].astype(np.float64)
    b = test.reshape(test.shape[0], -1)[:, ok.ravel()].astype(np.float64)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    keep = norms > 0
    cos = np.clip((a * b).sum(axis=0)[keep] / norms[keep], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def bpppb(n_bytes: int, n_samples: int) -> float:
    """Bits per pixel per band: compressed bits over (band x time x y x x) samples."""
    return 8.0 * n_bytes / n_samples
