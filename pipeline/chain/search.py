"""Search a request's catalog: a remote STAC API, or a local archive served on loopback meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pipeline.catalog.config import CatalogConfig, CatalogError, load_catalog
from pipeline.catalog.search import search_items
from pipeline.catalog.server import serve_archive
from pipeline.demo.archive import ensure_demo_archive
from pipeline.model import CubeRequest, Progress, SearchResult


@contextlib.contextmanager
def catalog_endpoint(
    catalog: CatalogConfig, archive: Path | None = None, progress: Progress | None = None
) -> Iterator[str]:
    """The catalog's API URL; for a local archive, a loopback STAC API running meanwhile."""
    if catalog.kind == "local-archive":
        with serve_archive(ensure_demo_archive(archive, progress)) as url:
            yield url
    elif catalog.url is None:
        raise CatalogError(f"catalog {catalog.name!r} has no URL (a local archive must be served first)")
    else:
        yield catalog.url


def search(request: CubeRequest, archive: Path | None = None, progress: Progress | None = None) -> SearchResult:
    """Items per sensor for a request (starting and stopping a local API if needed)."""
    catalog = load_catalog(request.catalog)
    with catalog_endpoint(catalog, archive, progress) as url:
        return search_items(request, catalog, url)
