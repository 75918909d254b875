"""Prefect flow ``embed-cube``: cube Zarr store -> embeddings variable in the same store. Thin: it calls ``pipeline``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.cube.cluster import dask_client
from pipeline.embeddings.engine import write_embeddings


@task(name="embed-store", cache_policy=NO_CACHE)
def embed_task(
    store: Path,
    model: str = "presto",
    weights: Path | None = None,
    name: str = "embeddings",
    dask_address: str | None = None,
    **options,
) -> dict:
    """Write ``name`` into ``store``; returns its sizes and provenance attributes."""
    with dask_client(dask_address):
        out = write_embeddings(store, model, weights, name=name, **options)
    get_run_logger().info("%s: %s %s sha256=%s", store, name, dict(out.sizes), out.attrs["weights_sha256"])
    return {"sizes": dict(out.sizes), **{k: out.attrs[k] for k in ("model", "weights_sha256", "pooling")}}


@flow(name="embed-cube", log_prints=True)
def embed_cube_flow(
    store: Path,
    model: str = "presto",
    weights: Path | None = None,
    name: str = "embeddings",
    dask_address: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
) -> dict:
    return embed_task(store, model, weights, name, dask_address, device=device, overwrite=overwrite)
