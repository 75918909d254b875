"""Quicklook PNGs of a cube: a true-colour image of its clearest date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure  # no pyplot: drawing leaves the caller's backend (e.g. Jupyter's) alone

from pipeline import __version__
from pipeline.store.paths import PNG_SOFTWARE, check_beside

#: the sensor whose time steps quicklooks of a multi-sensor cube prefer (the finest grid of the pipeline's sensors)
PREFERRED_SENSOR = "sentinel-2"


def clearest_time(cube: xr.Dataset, prefer_sensor: str | None = PREFERRED_SENSOR) -> int:
    """Index of the time step with the largest valid fraction (preferring one sensor)."""
    frac = cube["valid"].mean(("y", "x")).values
    if prefer_sensor is not None and "sensor" in cube.coords:
        preferred = cube["sensor"].values == prefer_sensor
        if preferred.any():
            frac = np.where(preferred, frac, -1)
    return int(np.argmax(frac))


def rgb_image(
    cube: xr.Dataset,
    t: int,
    bands: tuple[str, str, str] = ("red", "green", "blue"),
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """``(y, x, 3)`` float image in [0, 1], stretched from ``limits`` (default: its own 2-98 % range); masked pixels grey."""
    rgb = np.stack([cube[b].isel(time=t).values for b in bands], axis=-1).astype(np.float32)
    finite = np.isfinite(rgb).all(-1)
    if limits is None and finite.any():
        limits = stretch_limits(rgb)
    if limits is not None:
        lo, hi = limits
        rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb[~finite] = 0.5
    return rgb


def stretch_limits(rgb: np.ndarray) -> tuple[float, float]:
    """The 2nd and 98th percentiles of the pixels of ``rgb`` (y, x, 3) finite in every channel."""
    lo, hi = np.percentile(rgb[np.isfinite(rgb).all(-1)], [2, 98])
    return float(lo), float(hi)


#: true-colour band names in the conventions the pipeline meets (pipeline, Sentinel-2 with and without 0)
RGB_NAMES = (("red", "green", "blue"), ("B04", "B03", "B02"), ("B4", "B3", "B2"))


def rgb_bands(bands: list[str]) -> tuple[str, str, str]:
    """Red, green and blue among ``bands`` by name, else the first three (or the first, repeated)."""
    for names in RGB_NAMES:
        if set(names) <= set(bands):
            return names
    return (bands[0], bands[1], bands[2]) if len(bands) >= 3 else (bands[0],) * 3


def write_quicklook(cube: xr.Dataset, path: Path | str, t: int | None = None) -> Path:
    """Save a true-colour PNG of time step ``t`` (default: the clearest) and return its path."""
    t = clearest_time(cube) if t is None else t
    bands = (
        ("red", "green", "blue")
        if {"red", "green", "blue"} <= set(cube.data_vars)
        else (str(list(cube.data_vars)[0]),) * 3
    )
    image = rgb_image(cube, t, bands)
    when = np.datetime_as_string(cube.time.values[t], unit="D")
    sensor = str(cube["sensor"].values[t]) if "sensor" in cube.coords else ""
    fig = Figure(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.4), dpi=100)
    ax = fig.subplots()
    x, y = cube.x.values, cube.y.values
    ax.imshow(image, extent=(x[0], x[-1], y[-1], y[0]))
    ax.set_title(f"{sensor} {when}  (masked pixels grey)")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_beside([path])
    fig.savefig(path, metadata={"Software": f"{PNG_SOFTWARE} {__version__}"})
    return path
