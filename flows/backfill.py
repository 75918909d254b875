"""Prefect flows ``backfill-store`` and ``update-store``: the whole chain, transactionally. Thin: they call
``pipeline.chain``.

* ``backfill-store`` splits a request's AOI x date range into cube slices (tiles x time
  ranges) and then into units (a tile in every derived product the request names), and runs
  both as concurrent tasks on a ``DaskTaskRunner``: the cluster at ``$DASK_SCHEDULER_ADDRESS``
  if set, else a local one. Committed slices and units are skipped, so a re-run resumes a
  killed run; unit tasks go to GPU workers where the request embeds and the cluster has them.
* ``update-store`` (scheduled, see ``prefect.yaml``) searches the store's whole period
  (the request recorded in the store, up to ``until``) and adds the time steps of the
  items found for dates the store lacks: appended after its last one, or inserted in
  time order (items published late), writes again the slices of held dates that items
  published late touch, and makes again the units of exactly the tiles whose cube changed.
  See :mod:`pipeline.chain.slices` and :mod:`pipeline.chain.units`.

The flow process holds the store's writer lock for the whole run. Searches are
retried with exponential backoff and cached on their inputs for 30 minutes; slice
tasks are retried and their commit records persisted as task results.

``python -m flows.backfill serve`` serves both as deployments (a Prefect runner).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import dask
from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.tasks import exponential_backoff
from prefect_dask import DaskTaskRunner

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.task_runners import TaskRunner

from pipeline.catalog.search import EmptySearchError
from pipeline.chain.context import resolve_context
from pipeline.chain.preflight import check_products
from pipeline.chain.products import Tile
from pipeline.chain.search import search
from pipeline.chain.slices import BackfillReport, BackfillSpec, finalise, prepare, update_request, write_slice
from pipeline.chain.units import make_tile, prepare_units
from pipeline.cube.cluster import QUIET_HTTP, SCHEDULER_ENV
from pipeline.model import CubeRequest, SearchResult
from pipeline.store.engines import open_engine
from pipeline.store.journal import write_lock
from pipeline.store.layout import Slice

LOCAL_WORKERS_ENV = "EOCUBE_LOCAL_WORKERS"
DEFAULT_CRON = "0 6 * * *"


class _Retry(TypedDict):
    retries: int
    retry_delay_seconds: Callable[[int], list[float]]
    retry_jitter_factor: float


RETRY = _Retry(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.3)


def task_runner() -> TaskRunner[Any]:
    """A DaskTaskRunner on ``$DASK_SCHEDULER_ADDRESS``, else on a LocalCluster of worker processes."""
    address = os.environ.get(SCHEDULER_ENV)
    if address:
        return DaskTaskRunner(address=address)
    workers = int(os.environ.get(LOCAL_WORKERS_ENV, "2"))
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, **QUIET_HTTP}
    )


@task(
    name="search-window", **RETRY, cache_policy=INPUTS, cache_expiration=dt.timedelta(minutes=30), persist_result=True
)
def search_task(request: CubeRequest, archive: Path | None = None) -> SearchResult:
    found = search(request, archive)
    get_run_logger().info("found %s", {s: len(f.items) for s, f in found.items()})
    return found


@task(name="prepare-store", **RETRY, cache_policy=NO_CACHE)
def prepare_task(
    request: CubeRequest, found: SearchResult, spec: BackfillSpec, report: BackfillReport
) -> tuple[list[Slice], BackfillReport]:
    pending = prepare(request, found, spec, report)
    return pending, report


@task(name="write-slice", **RETRY, cache_policy=NO_CACHE, persist_result=True, task_run_name="slice {sl.id}")
def write_slice_task(request: CubeRequest, found: SearchResult, spec: BackfillSpec, sl: Slice) -> dict | None:
    with dask.config.set(scheduler="threads", num_workers=1):  # the slices are the parallelism
        return write_slice(request, found, spec, sl)


@task(name="plan-units", **RETRY, cache_policy=NO_CACHE)
def plan_units_task(request: CubeRequest, spec: BackfillSpec) -> list[Tile]:
    engine = open_engine(request.output, spec.engine)
    return prepare_units(request, engine, spec.tile_px)


@task(name="make-unit", **RETRY, cache_policy=NO_CACHE, task_run_name="unit {tile.id}")
def make_unit_task(request: CubeRequest, spec: BackfillSpec, tile: Tile) -> dict:
    engine = open_engine(request.output, spec.engine)
    with dask.config.set(scheduler="threads", num_workers=1):  # the units are the parallelism
        return make_tile(resolve_context(request, engine, spec.tile_px), engine, tile, spec.tile_px)


@task(name="finalise-store", **RETRY, cache_policy=NO_CACHE)
def finalise_task(
    request: CubeRequest, found: SearchResult, spec: BackfillSpec, report: BackfillReport, kind: str
) -> BackfillReport:
    return finalise(request, found, spec, report, kind)


def _write(request: CubeRequest, spec: BackfillSpec, archive: Path | None, kind: str) -> dict:
    report = BackfillReport(store=str(request.output), engine=spec.engine)
    with write_lock(request.output, spec.lock_timeout_s):
        try:
            found = search_task(request, archive)
        except EmptySearchError:
            if kind == "update":
                get_run_logger().info("no new items for %s", request.output)
                return report.to_dict()
            raise
        check_products(request, found)
        pending, report = prepare_task(request, found, spec, report)
        futures = [write_slice_task.submit(request, found, spec, sl) for sl in pending]
        for sl, fut in zip(pending, futures, strict=True):
            (report.written if fut.result() else report.skipped_concurrent).append(sl.id)
        if request.products():
            tiles = plan_units_task(request, spec)
            with dask.annotate(**unit_resources(request)):
                first = [make_unit_task.submit(request, spec, t) for t in tiles[:1]]  # it creates the product groups
                records = [f.result() for f in first]
                records += [f.result() for f in [make_unit_task.submit(request, spec, t) for t in tiles[1:]]]
            report.units = [r["unit"] for r in records]
        report = finalise_task(request, found, spec, report, kind)
    get_run_logger().info("%s of %s: %d slices written", kind, request.output, len(report.written))
    return report.to_dict()


def unit_resources(request: CubeRequest) -> dict:
    """Dask annotations of unit tasks: on GPU workers where the request embeds and the cluster has them."""
    if request.embed is None or request.embed.device == "cpu" or not os.environ.get(SCHEDULER_ENV):
        return {}
    from distributed import Client

    with Client(os.environ[SCHEDULER_ENV], timeout="20s") as client:
        gpus = any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())
    get_run_logger().info("units run on %s workers", "GPU" if gpus else "CPU (no GPU worker in the cluster)")
    return {"resources": {"GPU": 1}} if gpus else {}


@flow(name="backfill-store", task_runner=task_runner(), log_prints=True)
def backfill_flow(
    request: CubeRequest,
    engine: str = "zarr",
    tile_px: int = 1024,
    time_step: int = 4,
    shards: dict[str, int] | None = None,
    lock_timeout_s: float = 0.0,
    archive: Path | None = None,
) -> dict:
    """Backfill ``request.output`` slice by slice (skipping committed slices); returns the run report."""
    request = CubeRequest.model_validate(request)
    spec = BackfillSpec(
        engine=engine, tile_px=tile_px, time_step=time_step, shards=shards, lock_timeout_s=lock_timeout_s
    )
    return _write(request, spec, archive, "backfill")


@flow(name="update-store", task_runner=task_runner(), log_prints=True)
def update_flow(
    store: str,
    until: dt.date | None = None,
    tile_px: int = 1024,
    time_step: int = 4,
    shards: dict[str, int] | None = None,
    lock_timeout_s: float = 60.0,
    archive: Path | None = None,
) -> dict:
    """Add to ``store`` the time steps of the items found for dates it lacks, from its start to ``until``
    (default today): appended after its last one, or inserted in order (published late)."""
    request = update_request(store, until)
    spec = BackfillSpec(
        engine=open_engine(store).kind,
        tile_px=tile_px,
        time_step=time_step,
        shards=shards,
        lock_timeout_s=lock_timeout_s,
    )
    return _write(request, spec, archive, "update")


def serve(store: str, cron: str = DEFAULT_CRON, archive: str | None = None) -> None:
    """Serve ``update-store/incremental-update`` (cron) and ``backfill-store/backfill`` (on demand) from this process."""
    from prefect import serve as prefect_serve

    params = {"store": store, **({"archive": archive} if archive else {})}
    # to_deployment is sync-compatible: called here, outside an event loop, it returns the deployment itself
    # (its stubs also admit the coroutine it returns when awaited)
    prefect_serve(
        cast("RunnerDeployment", update_flow.to_deployment(name="incremental-update", cron=cron, parameters=params)),
        cast("RunnerDeployment", backfill_flow.to_deployment(name="backfill")),
    )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(
            sys.argv[2],
            sys.argv[3] if len(sys.argv) > 3 else DEFAULT_CRON,
            archive=os.environ.get("EOCUBE_DEMO_ARCHIVE"),
        )
    else:
        sys.exit("usage: python -m flows.backfill serve STORE [CRON]")
