"""Sensor profiles as data: one YAML table per product in ``profiles/``.

A profile maps a product's asset keys to our common band names, with centre
wavelength, native resolution, dtype, nodata and DN->reflectance scale/offset, and
names its QA assets with the decoding rule of each. :func:`item_band_specs` gives the
effective per-item values: ``raster:bands`` of the item when present, the profile
otherwise, and the Sentinel-2 processing-baseline BOA offset where it applies.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pystac
import yaml
from pydantic import BaseModel, ConfigDict, Field

PROFILE_DIR = Path(__file__).with_name("profiles")


class BandSpec(BaseModel):
    """One reflectance band of a product: ``reflectance = DN * scale + offset``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: str
    common_name: str
    center_wavelength_um: float
    resolution_m: float
    dtype: str
    nodata: float | int | None = None
    scale: float = 1.0
    offset: float = 0.0


class QASpec(BaseModel):
    """A QA asset and the name of the rule that decodes it (see :mod:`pipeline.sensors.qa`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: str
    rule: str
    resolution_m: float
    dtype: str


class SensorProfile(BaseModel):
    """A product's band table and QA assets; the first QA asset is the cloud mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    sensor: str
    collections: list[str] = Field(default_factory=list)
    bands: list[BandSpec]
    qa: list[QASpec]
    asset_aliases: dict[str, dict[str, str]] = Field(default_factory=dict)

    def band(self, common_name: str) -> BandSpec:
        """The band with this common name; ``KeyError`` listing the available names."""
        for b in self.bands:
            if b.common_name == common_name:
                return b
        raise KeyError(f"{self.id} has no band {common_name!r}; available: {[b.common_name for b in self.bands]}")

    def qa_spec(self, asset: str) -> QASpec:
        for q in self.qa:
            if q.asset == asset or any(aliases.get(q.asset) == asset for aliases in self.asset_aliases.values()):
                return q
        raise KeyError(f"{self.id} has no QA asset {asset!r}; QA assets: {[q.asset for q in self.qa]}")

    def for_collection(self, collection_id: str) -> "SensorProfile":
        """This profile with asset keys renamed as the collection names them."""
        aliases = self.asset_aliases.get(collection_id)
        if not aliases:
            return self
        bands = [b.model_copy(update={"asset": aliases.get(b.asset, b.asset)}) for b in self.bands]
        qa = [q.model_copy(update={"asset": aliases.get(q.asset, q.asset)}) for q in self.qa]
        return self.model_copy(update={"bands": bands, "qa": qa, "asset_aliases": {}})


@functools.lru_cache(maxsize=None)
def load_profile(profile_id: str) -> SensorProfile:
    """Load ``profiles/<profile_id>.yaml``."""
    path = PROFILE_DIR / f"{profile_id}.yaml"
    if not path.exists():
        raise ValueError(f"unknown sensor profile {profile_id!r}; known: {known_profiles()}")
    return SensorProfile.model_validate(yaml.safe_load(path.read_text()))


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _collection_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for pid in known_profiles():
        for c in load_profile(pid).collections:
            index[c] = pid
    return index


def profile_for_collection(collection_id: str) -> SensorProfile:
    """The profile of a collection id (Planetary Computer, Earth Search, CMR, USGS, stactools)."""
    pid = _collection_index().get(collection_id)
    if pid is None:
        raise ValueError(f"no sensor profile for collection {collection_id!r}; known: {sorted(_collection_index())}")
    return load_profile(pid).for_collection(collection_id)


def _as_dict(item: pystac.Item | dict) -> dict[str, Any]:
    return item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else item


def s2_boa_offset_applies(properties: dict[str, Any]) -> bool:
    """Whether DNs still carry the +1000 BOA add-offset of processing baseline >= 04.00."""
    baseline = properties.get("s2:processing_baseline")
    if baseline is None or properties.get("earthsearch:boa_offset_applied") is True:
        return False
    try:
        return float(baseline) >= 4.0
    except ValueError:
        return False


def item_band_specs(item: pystac.Item | dict, profile: SensorProfile) -> list[BandSpec]:
    """Effective band specs of one item (those of its assets the profile knows).

    ``raster:bands`` on the asset override dtype, nodata, scale and offset; otherwise the
    profile's values hold. For Sentinel-2 items whose DNs still carry the baseline-04.00
    BOA add-offset (no ``raster:bands`` offset, ``earthsearch:boa_offset_applied`` not
    true), the offset becomes ``-1000 * scale``.
    """
    d = _as_dict(item)
    props, assets = d.get("properties", {}), d.get("assets", {})
    collection = d.get("collection")
    if collection:
        profile = profile.for_collection(collection)
    out = []
    for spec in profile.bands:
        asset = assets.get(spec.asset)
        if asset is None:
            continue
        update: dict[str, Any] = {}
        rb = (asset.get("raster:bands") or [{}])[0]
        if "data_type" in rb:
            update["dtype"] = rb["data_type"]
        if "nodata" in rb:
            update["nodata"] = rb["nodata"]
        if "scale" in rb:
            update["scale"] = float(rb["scale"])
        if "offset" in rb:
            update["offset"] = float(rb["offset"])
        elif profile.sensor == "sentinel-2" and s2_boa_offset_applies(props):
            update["offset"] = -1000.0 * update.get("scale", spec.scale)
        out.append(spec.model_copy(update=update))
    return out
