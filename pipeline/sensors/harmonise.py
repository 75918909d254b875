"""Cross-sensor harmonisation onto a common band set."""
from __future__ import annotations

from collections.abc import Sequence

from pipeline.sensors.profiles import SensorProfile

#: Canonical order of harmonised band names (short to long wavelength).
CANONICAL_BANDS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
                   "nir09", "nir12", "swir16", "swir22")


def common_bands(profiles: Sequence[SensorProfile]) -> list[str]:
    """Bands every profile provides, in canonical order."""
    if not profiles:
        return []
    shared = set.intersection(*({b.common_name for b in p.bands} for p in profiles))
    return [b for b in CANONICAL_BANDS if b in shared]
