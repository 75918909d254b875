"""Readers of labelled EO time-series sets used to evaluate the uncertainty methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Inputs of the Presto fuel-moisture set (S1 dB, S2 DN, ERA5 K and m, SRTM m and degrees, NDVI).
FUEL_MOISTURE_FEATURES: tuple[str, ...] = (
    "VV",
    "VH",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8A",
    "B9",
    "B11",
    "B12",
    "temperature_2m",
    "total_precipitation",
    "elevation",
    "slope",
    "NDVI",
)
#: Source (sensor) of each input: the groups of per-group temporal dropout.
FUEL_MOISTURE_GROUPS: tuple[str, ...] = ("S1",) * 2 + ("S2",) * 11 + ("ERA5",) * 2 + ("SRTM",) * 2 + ("S2",)


@dataclass
class LabelledSeries:
    """``X [N, T, F]``, target ``y [N]``, ``is_test [N]`` and per-sample ``site [N]``."""

    X: np.ndarray
    y: np.ndarray
    is_test: np.ndarray
    site: np.ndarray
    features: tuple[str, ...]
    feature_groups: tuple[str, ...]
    latlon: np.ndarray
    month: np.ndarray
    dynamic_world: np.ndarray


def load_fuel_moisture(folder: str | Path) -> LabelledSeries:
    """Read the fuel-moisture set (2,313 samples, 3 monthly steps × 18 inputs, LFMC % target)."""
    folder = Path(folder)
    files = ["s1_s2_era5_srtm", "target", "is_test", "site", "latlon", "month", "dynamic_world"]
    missing = [f for f in files if not (folder / f"{f}.npy").exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(f + '.npy' for f in missing)}")
    a = {f: np.load(folder / f"{f}.npy") for f in files}
    X = a["s1_s2_era5_srtm"].astype(np.float64)
    if X.ndim != 3 or X.shape[2] != len(FUEL_MOISTURE_FEATURES):
        raise ValueError(f"unexpected input shape {X.shape}, expected (N, T, {len(FUEL_MOISTURE_FEATURES)})")
    return LabelledSeries(
        X,
        a["target"].astype(np.float64),
        a["is_test"].astype(bool),
        a["site"].astype(str),
        FUEL_MOISTURE_FEATURES,
        FUEL_MOISTURE_GROUPS,
        a["latlon"],
        a["month"],
        a["dynamic_world"],
    )
