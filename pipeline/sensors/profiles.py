"""Sensor profiles as data: one YAML table per product in ``profiles/``.

A profile maps a product's asset keys to our common band names, with centre wavelength
(micrometres), native resolution (metres), dtype, nodata and the DN -> reflectance
``scale``/``offset``, and names its QA assets with the decoding rule of each (rules in
``profiles/qa_rules.yaml``). Catalogs name the same assets differently: a profile lists
alternative *asset-key schemes* (e.g. Earth Search's lower-case keys), and
``profiles/collections.yaml`` maps collection ids to profiles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

PROFILE_DIR = Path(__file__).with_name("profiles")
_DATA_FILES = {"collections", "qa_rules"}  # YAML files in PROFILE_DIR that are not profiles


class BandSpec(BaseModel):
    """One reflectance band of a product: ``reflectance = DN * scale + offset`` (unitless)."""

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
    """A product's band table and QA assets; the first QA asset is the primary cloud mask.

    ``asset_keys`` holds alternative asset-key schemes: scheme name -> {default key: key}.
    ``item_id_prefix`` (one or several) and ``platforms`` (STAC ``platform``, compared
    case-insensitively with ``_`` read as ``-``) tell this product's items apart in collections
    mixing products.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    sensor: str
    title: str = ""
    item_id_prefix: str | tuple[str, ...] | None = None
    platforms: tuple[str, ...] = ()
    bands: list[BandSpec]
    qa: list[QASpec]
    asset_keys: dict[str, dict[str, str]] = Field(default_factory=dict)

    def matches_item(self, item_id: str, platform: str | None) -> tuple[bool, bool]:
        """Whether an item's id starts with this product's prefix, and whether its platform is one of ours."""
        prefixes = (self.item_id_prefix,) if isinstance(self.item_id_prefix, str) else self.item_id_prefix or ()
        named = str(platform or "").lower().replace("_", "-")
        return bool(prefixes) and item_id.startswith(prefixes), bool(named) and named in self.platforms

    def band(self, common_name: str) -> BandSpec:
        """The band with this common name; ``KeyError`` listing the available names."""
        for b in self.bands:
            if b.common_name == common_name:
                return b
        raise KeyError(f"{self.id} has no band {common_name!r}; available: {[b.common_name for b in self.bands]}")

    @property
    def common_names(self) -> list[str]:
        """Common names of the bands, in profile order."""
        return [b.common_name for b in self.bands]

    def qa_spec(self, asset: str) -> QASpec:
        """The QA spec of an asset key, in any of the profile's schemes, ignoring case and reading
        spaces as underscores (HDF4 names such as ``250m 16 days pixel reliability``)."""

        def norm(key: str) -> str:
            return "_".join(key.lower().split())

        wanted = norm(asset)
        for q in self.qa:
            keys = {q.asset} | {scheme.get(q.asset, q.asset) for scheme in self.asset_keys.values()}
            if wanted in {norm(k) for k in keys}:
                return q
        raise KeyError(f"{self.id} has no QA asset {asset!r}; QA assets: {[q.asset for q in self.qa]}")

    def with_asset_keys(self, keys: str | Mapping[str, str]) -> SensorProfile:
        """This profile with its asset keys renamed: a scheme name or a {default key: key} map.

        Keys the map does not name keep their default; unknown map keys are an error.
        """
        if isinstance(keys, str):
            if keys not in self.asset_keys:
                raise ValueError(f"{self.id} has no asset-key scheme {keys!r}; schemes: {sorted(self.asset_keys)}")
            keys = self.asset_keys[keys]
        defaults = {b.asset for b in self.bands} | {q.asset for q in self.qa}
        unknown = sorted(set(keys) - defaults)
        if unknown:
            raise ValueError(
                f"asset-key override for {self.id} names unknown asset keys {unknown}; known: {sorted(defaults)}"
            )
        bands = [b.model_copy(update={"asset": keys.get(b.asset, b.asset)}) for b in self.bands]
        qa = [q.model_copy(update={"asset": keys.get(q.asset, q.asset)}) for q in self.qa]
        return self.model_copy(update={"bands": bands, "qa": qa, "asset_keys": {}})

    def matching_asset_keys(self, asset_names: set[str]) -> SensorProfile:
        """The scheme whose keys an item's assets use most (ties keep the default keys)."""

        def hits(p: SensorProfile) -> int:
            return sum(k in asset_names for k in [b.asset for b in p.bands] + [q.asset for q in p.qa])

        best = self
        for scheme in self.asset_keys:
            candidate = self.with_asset_keys(scheme)
            if hits(candidate) > hits(best):
                best = candidate
        return best


class CollectionEntry(BaseModel):
    """One row of ``collections.yaml``: the profile(s) of a collection id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = None
    profiles: list[str] = Field(default_factory=list)
    default: str | None = None
    asset_keys: str | None = None

    @property
    def candidates(self) -> list[str]:
        return [self.profile] if self.profile else list(self.profiles)


def known_profiles() -> list[str]:
    """Ids of the profiles in ``profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml") if p.stem not in _DATA_FILES)


@functools.cache
def load_profile(profile_id: str) -> SensorProfile:
    """Load ``profiles/<profile_id>.yaml``; ``ValueError`` naming the known ids if absent."""
    if profile_id not in known_profiles():
        raise ValueError(f"unknown sensor profile {profile_id!r}; known: {known_profiles()}")
    return SensorProfile.model_validate(yaml.safe_load((PROFILE_DIR / f"{profile_id}.yaml").read_text()))


@functools.cache
def collection_table() -> dict[str, CollectionEntry]:
    """``collections.yaml``: collection id -> profile entry."""
    raw = yaml.safe_load((PROFILE_DIR / "collections.yaml").read_text())
    return {cid: CollectionEntry.model_validate(entry) for cid, entry in raw.items()}


def _entry(collection_id: str) -> CollectionEntry:
    table = collection_table()
    if collection_id not in table:
        raise ValueError(f"no sensor profile for collection {collection_id!r}; known collections: {sorted(table)}")
    return table[collection_id]


def _apply_keys(profile: SensorProfile, entry: CollectionEntry, asset_keys: Mapping[str, str] | None) -> SensorProfile:
    if asset_keys:
        return profile.with_asset_keys(asset_keys)
    if entry.asset_keys:
        return profile.with_asset_keys(entry.asset_keys)
    return profile


def candidate_profiles(collection_id: str) -> list[SensorProfile]:
    """Every profile a collection may hold (one, except for mixed collections such as stactools ``hls``)."""
    return [load_profile(pid) for pid in _entry(collection_id).candidates]


def profile_for_collection(collection_id: str, asset_keys: Mapping[str, str] | None = None) -> SensorProfile:
    """The profile of a collection id (Planetary Computer, Earth Search, CMR, USGS, stactools).

    ``asset_keys`` ({profile asset key: catalog key}, e.g. from a catalog YAML) overrides the
    collection's asset keys. A collection mixing several products gives its ``default`` profile
    (Landsat: OLI; :func:`profile_for_item` picks per item). Unknown ids, and mixed collections
    without a default (stactools ``hls``), raise ``ValueError`` naming the problem.
    """
    entry = _entry(collection_id)
    if len(entry.candidates) != 1 and entry.default is None:
        raise ValueError(
            f"collection {collection_id!r} mixes profiles {entry.candidates}; use profile_for_item to pick one per item"
        )
    return _apply_keys(load_profile(entry.default or entry.candidates[0]), entry, asset_keys)


def as_item_dict(item: Any) -> dict[str, Any]:
    """A STAC item as a plain dict (``pystac.Item`` or dict in)."""
    return item if isinstance(item, dict) else item.to_dict(transform_hrefs=False)


def profile_for_item(item: Any, asset_keys: Mapping[str, str] | None = None) -> SensorProfile:
    """The profile of one STAC item (``pystac.Item`` or dict), with the asset keys it uses.

    The item's ``collection`` picks the profile (the id prefix decides in mixed
    collections); without ``asset_keys`` the key scheme matching the item's assets is used.
    """
    d = as_item_dict(item)
    collection = d.get("collection")
    if not collection:
        raise ValueError(f"item {d.get('id')!r} names no collection; use profile_for_collection")
    entry = _entry(collection)
    profiles = [load_profile(pid) for pid in entry.candidates]
    if len(profiles) > 1:
        item_id, platform = str(d.get("id", "")), d.get("properties", {}).get("platform")
        matches = [p.matches_item(item_id, platform) for p in profiles]
        by_id = [p for p, (id_ok, _) in zip(profiles, matches, strict=True) if id_ok]
        profiles = by_id or [p for p, (_, platform_ok) in zip(profiles, matches, strict=True) if platform_ok]
        if len(profiles) != 1:
            raise ValueError(
                f"cannot tell which of {entry.candidates} item {item_id!r} of {collection!r} (platform {platform!r}) is"
            )
    profile = profiles[0]
    if asset_keys or entry.asset_keys:
        return _apply_keys(profile, entry, asset_keys)
    return profile.matching_asset_keys(set(d.get("assets", {})))
