"""Prefect flow ``build_cube``: request -> search -> cube -> Zarr store. Thin: it calls ``pipeline``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from pipeline.chain.run import assemble_and_write, summarize
from pipeline.chain.search import search
from pipeline.cube.cluster import dask_client
from pipeline.model import CubeRequest, CubeResult, Progress, SearchResult


@task(
    name="search-catalog",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=lambda task, run, state: "unreachable" in str(state.message or ""),
    cache_policy=NO_CACHE,
)
def search_task(request: CubeRequest, archive: Path | None = None, progress: Progress | None = None) -> SearchResult:
    found = search(request, archive, progress)
    logger = get_run_logger()
    for sensor, s in found.items():
        logger.info("%s: %d items from %s", sensor, len(s.items), s.collection)
    return found


@task(name="assemble-and-write", cache_policy=NO_CACHE)
def write_task(
    request: CubeRequest, found: SearchResult, dask_address: str | None = None, progress: Progress | None = None
) -> Path:
    with dask_client(dask_address):
        return assemble_and_write(request, found, progress)


@task(name="summarize", cache_policy=NO_CACHE)
def summarize_task(store: Path, found: SearchResult) -> CubeResult:
    return summarize(store, found, quicklook_path=Path(store).with_suffix(".quicklook.png"))


@flow(name="build-cube", log_prints=True)
def build_cube(
    request: CubeRequest, archive: Path | None = None, dask_address: str | None = None, progress: Progress | None = None
) -> CubeResult:
    """Validate the request, search the catalog, assemble the masked cube and write the store."""
    request = CubeRequest.model_validate(request)
    found = search_task(request, archive, progress)
    store = write_task(request, found, dask_address, progress)
    return summarize_task(store, found)
