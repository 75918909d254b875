"""Catalog search: catalog definitions (YAML), a loopback STAC API for local archives, and search."""

from pipeline.catalog.config import CatalogConfig, CatalogError, known_catalogs, load_catalog
from pipeline.catalog.search import EmptySearchError, SensorItems, deduplicate, search_items
from pipeline.catalog.server import serve_archive

__all__ = [
    "CatalogConfig",
    "CatalogError",
    "EmptySearchError",
    "SensorItems",
    "deduplicate",
    "known_catalogs",
    "load_catalog",
    "search_items",
    "serve_archive",
]
