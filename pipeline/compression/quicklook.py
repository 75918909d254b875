"""A PNG comparing a cube with its decompressed copy: true colour before and after, and the error map."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure

from pipeline import __version__
from pipeline.cube.quicklook import PREFERRED_SENSOR, rgb_bands, rgb_image, stretch_limits
from pipeline.store.paths import PNG_SOFTWARE, check_beside


def comparison_time(cube: xr.Dataset, bands: list[str]) -> int:
    """Index of a time step with (nearly) the most finite values over ``bands`` and, among those, the darkest blue.

    Unlike :func:`pipeline.cube.quicklook.clearest_time` it needs no ``valid`` variable (cubes from
    elsewhere have none).
    Without a cloud mask the most complete frames are often cloudy ones; a low median in the
    blue band (``rgb_bands(bands)[2]``) prefers a clear one. In a multi-sensor cube (``sensor``
    coordinate) only its ``PREFERRED_SENSOR`` steps are considered, where there are any.
    """
    # np.isfinite of a DataArray is a DataArray (__array_ufunc__), which numpy's stubs do not model
    finite = [cast(xr.DataArray, np.isfinite(cube[b].astype(np.float32))).sum(("y", "x")).values for b in bands]
    counts = np.sum(finite, axis=0)
    if "sensor" in cube.coords and (cube["sensor"].values == PREFERRED_SENSOR).any():  # a multi-sensor cube
        counts = np.where(cube["sensor"].values == PREFERRED_SENSOR, counts, -1)
    candidates = np.flatnonzero(counts >= 0.99 * counts.max())
    blue = cube[rgb_bands(bands)[2]].isel(time=candidates).astype(np.float32)
    medians = blue.median(("y", "x")).values
    return int(candidates[np.nanargmin(medians)]) if np.isfinite(medians).any() else int(candidates[0])


def write_comparison(
    original: xr.Dataset, decoded: xr.Dataset, bands: list[str], path: Path | str, peak: float, t: int | None = None
) -> Path:
    """Save original | decoded true colour (one shared 2-98 % stretch) | per-pixel RMS error over ``bands``.

    ``original`` and ``decoded`` hold ``bands`` on ``(time, y, x)`` in the same unit; ``t`` defaults
    to :func:`comparison_time`. The error panel is in the data's unit, masked
    pixels grey; the title gives that frame's PSNR for signal peak ``peak`` (the codec's value-range width).
    """
    t = comparison_time(original, bands) if t is None else t
    ref = np.stack([original[b].isel(time=t).values for b in bands]).astype(np.float64)
    test = np.stack([decoded[b].isel(time=t).values for b in bands]).astype(np.float64)
    rgb_names = rgb_bands(bands)
    pick = [bands.index(b) for b in rgb_names]
    rgb_ref = np.moveaxis(ref[pick], 0, -1)
    limits = stretch_limits(rgb_ref) if np.isfinite(rgb_ref).all(-1).any() else (0.0, 1.0)  # one stretch for both
    rms = np.sqrt(np.mean((test - ref) ** 2, axis=0))
    valid = np.isfinite(rms)
    frame_psnr = 10 * np.log10(peak**2 / max(float(np.mean(rms[valid] ** 2)), 1e-30)) if valid.any() else np.nan
    fig = Figure(figsize=(13, 4.6), dpi=100)  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(1, 3)
    for ax, cube, title in ((axes[0], original, "original"), (axes[1], decoded, "decoded")):
        ax.imshow(rgb_image(cube, t, rgb_names, limits))
        ax.set_title(f"{title} ({', '.join(rgb_names)})")
    cmap = colormaps["magma"].copy()
    cmap.set_bad("0.5")
    im = axes[2].imshow(
        np.where(valid, rms, np.nan),
        cmap=cmap,
        vmin=0,
        vmax=float(np.percentile(rms[valid], 99.5)) if valid.any() else 1.0,
    )
    axes[2].set_title("RMS error over bands (data units)")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_axis_off()
    when = np.datetime_as_string(original.time.values[t], unit="D") if "time" in original.coords else f"t={t}"
    fig.suptitle(f"{when}: frame PSNR {frame_psnr:.1f} dB (peak {peak:g}); masked pixels grey")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_beside([path])
    fig.savefig(path, metadata={"Software": f"{PNG_SOFTWARE} {__version__}"})
    return path
