"""Prefect flow ``composite-store``: a written cube -> regular-bin composites. Thin: it calls ``pipeline``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.chain.composite import composite_store as write_composites
from pipeline.cube.cluster import dask_client
from pipeline.cube.compositing import Method


@task(name="composite-and-write", cache_policy=NO_CACHE)
def composite_task(store: Path, out: Path, freq: str, method: Method, overwrite: bool) -> Path:
    return write_composites(store, out, freq, method, overwrite)


@flow(name="composite-store", log_prints=True)
def composite_store(
    store: Path,
    out: Path,
    freq: str = "1MS",
    method: Method = "median",
    dask_address: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Composite a cube store into bins of ``freq`` with ``method`` and write a new store."""
    with dask_client(dask_address):
        return composite_task(Path(store), Path(out), freq, method, overwrite)
