"""Prefect flow ``composite-store``: a written cube -> regular-bin composites. Thin: it calls ``pipeline``."""
from __future__ import annotations

from pathlib import Path

import xarray as xr
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.cube.cluster import dask_client
from pipeline.cube.compositing import composite
from pipeline.store.zarr_store import write_store


@task(name="composite-and-write", cache_policy=NO_CACHE)
def composite_task(store: Path, out: Path, freq: str, method: str) -> Path:
    if not Path(store).exists():
        raise FileNotFoundError(f"cube store {store} does not exist")
    cube = xr.open_zarr(store)
    chunks = {"time": 1, "y": cube.chunks["y"][0], "x": cube.chunks["x"][0]}
    return write_store(composite(cube, freq, method), out, chunks)


@flow(name="composite-store", log_prints=True)
def composite_store(store: Path, out: Path, freq: str = "1MS", method: str = "median",
                    dask_address: str | None = None) -> Path:
    """Composite a cube store into bins of ``freq`` with ``method`` and write a new store."""
    with dask_client(dask_address):
        return composite_task(Path(store), Path(out), freq, method)
