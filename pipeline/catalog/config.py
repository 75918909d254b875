"""Catalog definitions: one YAML file per STAC catalog, loaded into :class:`CatalogConfig`.

Adding a catalog is a YAML file in ``catalogs/`` (or anywhere, passed by path): its
API URL, how assets are signed, and which collection serves each sensor. The sensor names
a request may use are the catalog's keys; the profile describing a collection's assets is
looked up in the one table of collections (``sensors/profiles/collections.yaml``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

#: Where the catalog YAMLs of this project live; ``$EOCUBE_CATALOGS`` adds a folder.
CATALOG_DIR = Path(__file__).resolve().parents[2] / "catalogs"


class CatalogError(ValueError):
    """A catalog that cannot be found, parsed or reached."""


class CollectionRef(BaseModel):
    """Which collection of a catalog serves a sensor; the profile of its assets is the collection's
    (``sensors/profiles/collections.yaml``) unless given here."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    profile: str | None = None
    asset_keys: dict[str, str] = Field(default_factory=dict, description="profile asset key -> this catalog's key")


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=10_000, description="items per page")
    max_items: int | None = Field(None, description="stop after this many items per collection")
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5


class CatalogConfig(BaseModel):
    """A STAC catalog as the pipeline sees it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str = ""
    kind: Literal["stac-api", "local-archive"] = "stac-api"
    url: str | None = None
    signing: Literal["none", "planetary-computer", "earthdata"] = "none"
    signing_url: str | None = None
    search: SearchSettings = Field(default_factory=SearchSettings)
    collections: dict[str, CollectionRef]

    def profile_for(self, sensor: str) -> str:
        """The id of the sensor profile describing the assets of the collection serving ``sensor``."""
        ref = self.collection_for(sensor)
        if ref.profile is not None:
            return ref.profile
        from pipeline.sensors.profiles import profile_for_collection

        return profile_for_collection(ref.collection).id

    def collection_for(self, sensor: str) -> CollectionRef:
        """The collection serving ``sensor``; a clear error if this catalog has none."""
        try:
            return self.collections[sensor]
        except KeyError:
            raise CatalogError(
                f"catalog {self.name!r} has no collection for sensor {sensor!r}; it serves {sorted(self.collections)}"
            ) from None


def _search_dirs() -> list[Path]:
    extra = os.environ.get("EOCUBE_CATALOGS")
    return ([Path(p) for p in extra.split(os.pathsep)] if extra else []) + [CATALOG_DIR]


def known_catalogs() -> list[str]:
    """Names of the catalog YAMLs found in the catalog folders."""
    return sorted({p.stem for d in _search_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def load_catalog(name_or_path: str | Path) -> CatalogConfig:
    """Load a catalog by name (``catalogs/<name>.yaml``) or from a YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        candidates = [d / f"{name_or_path}.yaml" for d in _search_dirs()]
        path = next((c for c in candidates if c.exists()), candidates[-1])
    if not path.exists():
        raise CatalogError(f"unknown catalog {str(name_or_path)!r}; known: {known_catalogs()}")
    try:
        data = yaml.safe_load(path.read_text())
        return CatalogConfig.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise CatalogError(f"catalog file {path} is invalid: {exc}") from exc
