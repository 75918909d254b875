"""Sensor profiles (band tables as data), exact QA decoding, masks and harmonisation."""

from pipeline.sensors.harmonise import CANONICAL_BANDS, apply_bandpass_adjustment, bandpass_coefficients, common_bands
from pipeline.sensors.items import AssetGrid, asset_grid, item_band_specs
from pipeline.sensors.mask import MaskPolicy, invalid_mask
from pipeline.sensors.profiles import (
    BandSpec,
    QASpec,
    SensorProfile,
    known_profiles,
    load_profile,
    profile_for_collection,
    profile_for_item,
)
from pipeline.sensors.qa import decode_qa, flag_fractions, qa_rules

__all__ = [
    "AssetGrid",
    "BandSpec",
    "CANONICAL_BANDS",
    "MaskPolicy",
    "QASpec",
    "SensorProfile",
    "apply_bandpass_adjustment",
    "asset_grid",
    "bandpass_coefficients",
    "common_bands",
    "decode_qa",
    "flag_fractions",
    "invalid_mask",
    "item_band_specs",
    "known_profiles",
    "load_profile",
    "profile_for_collection",
    "profile_for_item",
    "qa_rules",
]
