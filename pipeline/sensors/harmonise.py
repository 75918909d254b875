"""Cross-sensor harmonisation: a common band set and published bandpass adjustments."""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence

import numpy as np
import xarray as xr

from pipeline.sensors.profiles import PROFILE_DIR, SensorProfile

#: Canonical order of harmonised band names (short to long wavelength).
CANONICAL_BANDS = (
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "nir12",
    "cirrus",
    "swir16",
    "swir22",
)

BANDPASS_FILE = PROFILE_DIR / "bandpass_hls_v2.csv"


def common_bands(profiles: Sequence[SensorProfile]) -> list[str]:
    """Common names every profile provides, in canonical order (bands outside it last, sorted)."""
    if not profiles:
        return []
    shared = set.intersection(*(set(p.common_names) for p in profiles))
    return [b for b in CANONICAL_BANDS if b in shared] + sorted(shared - set(CANONICAL_BANDS))


@functools.cache
def bandpass_coefficients() -> dict[tuple[str, str, str], dict[str, tuple[float, float]]]:
    """``(source sensor, target sensor, platform) -> {common name: (slope, offset)}`` from the CSV."""
    lines = [ln for ln in BANDPASS_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    table: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
    for row in csv.DictReader(lines):
        key = (row["source"], row["target"], row["platform"])
        table.setdefault(key, {})[row["common_name"]] = (float(row["slope"]), float(row["offset"]))
    return table


def apply_bandpass_adjustment(
    ds: xr.Dataset, sensor: str = "sentinel-2", target: str = "landsat", platform: str = "sentinel-2a"
) -> xr.Dataset:
    """Adjust ``sensor``'s reflectances to look like ``target``'s: ``slope * band + offset``.

    Works on a cube with common band names as variables (dims ``time, y, x``, reflectance
    in [0, 1], NaN kept). Only time steps whose ``sensor`` coordinate equals ``sensor`` are
    changed (all of them if there is no such coordinate). The coefficients are those of
    ``platform``, or per time step from a ``platform`` coordinate when the cube has one.
    Bands without a published coefficient (red edge, broad NIR) are left unchanged.
    Coefficients: HLS v2.0 MSI -> OLI (``profiles/bandpass_hls_v2.csv``).
    """
    table = bandpass_coefficients()
    known = sorted({k[2] for k in table if k[:2] == (sensor, target)})
    if not known:
        pairs = sorted({k[:2] for k in table})
        raise ValueError(f"no bandpass coefficients from {sensor!r} to {target!r}; available: {pairs}")
    n = ds.sizes["time"]
    selected = (ds["sensor"].values == sensor) if "sensor" in ds.coords else np.ones(n, bool)
    platforms = [str(p).lower() for p in ds["platform"].values] if "platform" in ds.coords else [platform] * n
    unknown = sorted({p for p, s in zip(platforms, selected, strict=True) if s and p not in known})
    if unknown:
        raise ValueError(f"no {sensor}->{target} coefficients for platform(s) {unknown}; known: {known}")
    out = ds.copy()
    bands = set(table[(sensor, target, known[0])]) & set(ds.data_vars)
    for band in sorted(bands):
        slope = np.ones(n, np.float32)
        offset = np.zeros(n, np.float32)
        for t in np.flatnonzero(selected):
            slope[t], offset[t] = table[(sensor, target, platforms[t])][band]
        time = {"time": ds["time"]}
        scaled = ds[band] * xr.DataArray(slope, dims="time", coords=time) + xr.DataArray(
            offset, dims="time", coords=time
        )
        out[band] = scaled.astype(ds[band].dtype)
        out[band].attrs = ds[band].attrs
    out.attrs["eocube:bandpass_adjustment"] = f"{sensor}->{target} (HLS v2.0), bands {sorted(bands)}"
    return out
