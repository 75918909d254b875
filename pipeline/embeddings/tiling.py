"""Chip tiling with overlap, and the geometry of chips (pixel-centre lat/lon, acquisition dates).

A cube axis of ``n`` pixels is padded up to a whole number of output cells (``unit`` pixels: 1 for
pixel models, the patch size for patch models) and covered by windows of ``chip`` pixels that
overlap by ``overlap`` pixels; the last window is aligned to the end. Each output cell is taken
from exactly one window: the boundary between two neighbours is the middle of their overlap
(rounded down to a cell), so cells near chip edges come from the chip where they are most central.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer


@dataclass(frozen=True)
class Window:
    """One chip along one axis, in pixels: read ``[start, start + chip)``, keep ``[keep_start, keep_stop)``."""

    start: int
    keep_start: int
    keep_stop: int


def axis_windows(n: int, chip: int, overlap: int, unit: int = 1) -> list[Window]:
    """Windows covering ``n`` pixels (see the module docstring). All offsets are multiples of ``unit``."""
    if n < 1:
        raise ValueError(f"cannot tile an empty axis (n={n})")
    if chip % unit or overlap % unit:
        raise ValueError(f"chip ({chip}) and overlap ({overlap}) must be multiples of the patch size {unit}")
    if not 0 <= overlap < chip:
        raise ValueError(f"overlap must be in [0, chip); got overlap={overlap}, chip={chip}")
    n_pad = -(-n // unit) * unit
    if n_pad <= chip:
        return [Window(0, 0, n_pad)]
    stride = chip - overlap
    starts = list(range(0, n_pad - chip, stride)) + [n_pad - chip]
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        bounds.append(((b + a + chip) // 2) // unit * unit)
    bounds.append(n_pad)
    return [Window(s, lo, hi) for s, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)]


def pixel_centres(coord: np.ndarray, start: int, size: int) -> np.ndarray:
    """Centres of pixels ``start .. start+size-1`` of a regular axis, extrapolated past its ends (metres)."""
    coord = np.asarray(coord, dtype=np.float64)
    step = coord[1] - coord[0] if coord.size > 1 else 1.0
    return coord[0] + step * np.arange(start, start + size)


def latlon_grid(x: np.ndarray, y: np.ndarray, crs_wkt: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``x [w]``, ``y [h]`` in ``crs`` -> ``(lat [h, w], lon [h, w])`` degrees (EPSG:4326)."""
    xx, yy = np.meshgrid(x, y)
    tf = Transformer.from_crs(CRS.from_user_input(crs_wkt), CRS.from_epsg(4326), always_xy=True)
    lon, lat = tf.transform(xx, yy)
    return np.asarray(lat, np.float64), np.asarray(lon, np.float64)


def time_features(times: np.ndarray) -> dict[str, np.ndarray]:
    """``datetime64 [T]`` -> month (0 = January), year and day of year (1..366), all int64 ``[T]``."""
    t = np.asarray(times).astype("datetime64[D]")
    years = t.astype("datetime64[Y]")
    months = (t.astype("datetime64[M]") - years.astype("datetime64[M]")).astype(np.int64)
    doy = (t - years.astype("datetime64[D]")).astype(np.int64) + 1
    return {"month": months, "year": years.astype(np.int64) + 1970, "doy": doy}
