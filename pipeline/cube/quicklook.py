"""Quicklook PNGs of a cube: a true-colour image of its clearest date."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def clearest_time(cube: xr.Dataset, prefer_sensor: str | None = "sentinel-2") -> int:
    """Index of the time step with the largest valid fraction (preferring one sensor)."""
    frac = cube["valid"].mean(("y", "x")).values
    if prefer_sensor is not None and "sensor" in cube.coords:
        preferred = cube["sensor"].values == prefer_sensor
        if preferred.any():
            frac = np.where(preferred, frac, -1)
    return int(np.argmax(frac))


def rgb_image(cube: xr.Dataset, t: int, bands: tuple[str, str, str] = ("red", "green", "blue")) -> np.ndarray:
    """``(y, x, 3)`` float image in [0, 1], stretched to the 2-98 % range; masked pixels grey."""
    rgb = np.stack([cube[b].isel(time=t).values for b in bands], axis=-1).astype(np.float32)
    finite = np.isfinite(rgb).all(-1)
    if finite.any():
        lo, hi = np.percentile(rgb[finite], [2, 98])
        rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb[~finite] = 0.5
    return rgb


def write_quicklook(cube: xr.Dataset, path: Path | str, t: int | None = None) -> Path:
    """Save a true-colour PNG of time step ``t`` (default: the clearest) and return its path."""
    t = clearest_time(cube) if t is None else t
    bands = ("red", "green", "blue") if {"red", "green", "blue"} <= set(cube.data_vars) else (list(cube.data_vars)[0],) * 3
    image = rgb_image(cube, t, bands)
    when = np.datetime_as_string(cube.time.values[t], unit="D")
    sensor = str(cube["sensor"].values[t]) if "sensor" in cube.coords else ""
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.4), dpi=100)
    x, y = cube.x.values, cube.y.values
    ax.imshow(image, extent=(x[0], x[-1], y[-1], y[0]))
    ax.set_title(f"{sensor} {when}  (masked pixels grey)")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
