"""Sensor profiles (band tables as data), QA decoding and harmonisation."""
from pipeline.sensors.harmonise import CANONICAL_BANDS, common_bands
from pipeline.sensors.profiles import (
    BandSpec,
    QASpec,
    SensorProfile,
    item_band_specs,
    known_profiles,
    load_profile,
    profile_for_collection,
)
from pipeline.sensors.qa import MaskPolicy, decode_qa, invalid_mask

__all__ = ["BandSpec", "CANONICAL_BANDS", "MaskPolicy", "QASpec", "SensorProfile", "common_bands", "decode_qa",
           "invalid_mask", "item_band_specs", "known_profiles", "load_profile", "profile_for_collection"]
