"""Backfills and incremental updates of a request's store, slice by slice, on a Dask cluster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipeline.catalog.search import EmptySearchError
from pipeline.chain.preflight import check_products, preflight
from pipeline.chain.search import search
from pipeline.chain.slices import BackfillReport, BackfillSpec, backfill, update_request
from pipeline.cube.cluster import dask_client
from pipeline.model import CubeRequest, Progress
from pipeline.store.engines import open_engine
from pipeline.store.journal import write_lock


def backfill_request(
    request: CubeRequest,
    spec: BackfillSpec = BackfillSpec(),
    archive: Path | None = None,
    dask_address: str | None = None,
    progress: Progress | None = None,
    kind: str = "backfill",
) -> BackfillReport:
    """Check, search and backfill ``request.output`` (resuming: committed slices are skipped).

    The store's writer lock is taken before the search, so a second writer fails fast.
    """
    preflight(request, resume=True)
    with write_lock(request.output, spec.lock_timeout_s):
        try:
            found = search(request, archive, progress)
            check_products(request, found)  # the cube's time steps are known now: before any work
        except EmptySearchError:
            if kind == "update":
                return BackfillReport(store=str(request.output), engine=spec.engine)
            raise
        with dask_client(dask_address):
            report = (lambda d, n: progress("slices", d, n)) if progress else None
            return backfill(request, found, spec, report, kind=kind, locked=True)


def update_store(
    store: Path | str,
    until: dt.date | None = None,
    spec: BackfillSpec | None = None,
    archive: Path | None = None,
    dask_address: str | None = None,
    progress: Progress | None = None,
) -> BackfillReport:
    """Add to ``store`` what its catalog published since (or late for) its period, up to ``until`` (default today)."""
    request = update_request(store, until)
    spec = spec or BackfillSpec()
    spec = BackfillSpec(
        engine=open_engine(store).kind,
        tile_px=spec.tile_px,
        time_step=spec.time_step,
        shards=spec.shards,
        lock_timeout_s=spec.lock_timeout_s,
    )
    return backfill_request(request, spec, archive, dask_address, progress, kind="update")
