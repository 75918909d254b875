"""Transactional, resumable backfills and incremental updates of a store.

A request's grid and time axis are split into slices (tiles x time ranges, see
:func:`~pipeline.store.layout.plan_slices`), each written and committed on its own
(:mod:`pipeline.store.engines`). Re-running skips committed slices, so a run killed at
any point and re-run yields the same data as an uninterrupted one. An incremental
update appends the time steps of items acquired after the store's last time step.

The steps are plain functions (:func:`prepare`, :func:`write_slice`, :func:`finalise`)
so the Prefect flows in ``flows/backfill.py`` can run slices as concurrent tasks;
:func:`backfill` runs them in sequence on the active Dask scheduler.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from pipeline.catalog.search import SensorItems
from pipeline.cube.assemble import request_cube
from pipeline.cube.load import items_per_time
from pipeline.model import CubeRequest
from pipeline.store.cf import annotate_cf, encodings
from pipeline.store.engines import ENGINES, Engine, open_engine
from pipeline.store.journal import clear_failure, record_failure, record_run, write_lock
from pipeline.store.layout import Slice, StoreLayout, check_alignment, covered_times, plan_slices
from pipeline.store.zarr_store import StoreError, provenance_attrs

#: How far a store time may be from the cube time it was written from (CF time is whole seconds).
TIME_TOLERANCE = np.timedelta64(1, "s")


@dataclass(frozen=True)
class BackfillSpec:
    """How a backfill splits and writes: engine, slice size (pixels, time steps), shards, lock wait (s)."""

    engine: str = "zarr"
    tile_px: int = 1024
    time_step: int = 4
    shards: dict[str, int] | None = None
    lock_timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown store engine {self.engine!r}; choose one of {ENGINES}")
        if self.tile_px < 1 or self.time_step < 1:
            raise ValueError(f"tile_px and time_step must be >= 1, got {self.tile_px}, {self.time_step}")

    def layout(self, request: CubeRequest) -> StoreLayout:
        return StoreLayout(request.chunks, self.shards)


@dataclass
class BackfillReport:
    """What a run did: slices planned/written/skipped, new time steps, the STAC item path."""

    store: str
    engine: str
    planned: int = 0
    written: list[str] = field(default_factory=list)
    skipped_concurrent: list[str] = field(default_factory=list)
    appended_times: int = 0
    late_times_skipped: int = 0
    stac_item: str | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def lazy_cube(request: CubeRequest, found: dict[str, SensorItems], layout: StoreLayout) -> xr.Dataset:
    """The request's lazy cube, CF-annotated, with provenance, in Dask chunks of whole shards."""
    cube = request_cube(request, found)
    sources = cube.attrs.pop("source_items")
    cube.attrs.update(provenance_attrs(request.model_dump(mode="json"), sources))
    cube = annotate_cf(cube).chunk(layout.dask_chunks(cube.sizes))
    # labels along time (sensor) are written with the skeleton, so they must be in memory
    return cube.assign_coords({c: cube[c].load() for c in cube.coords if c not in cube.dims})


def _check_same_grid(store: xr.Dataset, cube: xr.Dataset, path: Path) -> None:
    for dim in ("y", "x"):
        if store.sizes[dim] != cube.sizes[dim] or not np.allclose(store[dim].values, cube[dim].values):
            raise StoreError(f"{path}: the request's {dim} grid differs from the store's; use another output path")
    missing = sorted(set(cube.data_vars) - set(store.data_vars))
    if missing:
        raise StoreError(f"{path}: the store lacks variables {missing} of the request")


def prepare(request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec,
            report: BackfillReport | None = None, cube: xr.Dataset | None = None) -> list[Slice]:
    """Create the store (or append new time steps) and return the slices still to write.

    Cube time steps after the store's last one are appended; earlier ones the store
    lacks (items published late) are counted in ``report.late_times_skipped``.
    """
    engine = open_engine(request.output, spec.engine)
    layout = spec.layout(request)
    cube = lazy_cube(request, found, layout) if cube is None else cube
    if not engine.exists():
        engine.create(cube, encodings(cube, layout.chunks, layout.shards))
    else:
        store = engine.open()
        _check_same_grid(store, cube, engine.path)
        last = store.time.values[-1] if store.sizes["time"] else np.datetime64("NaT")
        newer = cube.time.values > last + TIME_TOLERANCE if store.sizes["time"] else np.ones(cube.sizes["time"], bool)
        known = np.isin(cube.time.values.astype("datetime64[s]"), store.time.values.astype("datetime64[s]"))
        if newer.any():
            engine.append_times(cube.isel(time=np.flatnonzero(newer)))
        if report is not None:
            report.appended_times = int(newer.sum())
            report.late_times_skipped = int((~newer & ~known).sum())
    sizes = dict(engine.open().sizes)
    pending = plan_slices(sizes, layout, spec.tile_px, spec.time_step, covered_times(list(engine.committed())))
    if report is not None:
        report.planned = len(pending)
    return pending


def slice_sources(cube: xr.Dataset, found: dict[str, SensorItems]) -> dict[str, list[str]]:
    """Ids of the items behind the time steps of ``cube`` (same solar day), per sensor."""
    out = {}
    for sensor, s in found.items():
        times = cube.time.values[cube["sensor"].values == sensor]
        groups = items_per_time(times, s.items) if len(times) and s.items else []
        ids = sorted({i.id for g in groups for i in g})
        if ids:
            out[sensor] = ids
    return out


def write_slice(request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec, sl: Slice,
                cube: xr.Dataset | None = None) -> dict | None:
    """Compute one slice on the active Dask scheduler and commit it; its record, or None if
    a concurrent writer committed it first. A failure is journalled and re-raised.

    ``cube`` is :func:`lazy_cube` of the same request, built once by callers writing many slices.
    """
    engine = open_engine(request.output, spec.engine)
    layout = spec.layout(request)
    try:
        store_times = engine.open().time.values[sl.t[0]:sl.t[1]]
        cube = lazy_cube(request, found, layout) if cube is None else cube
        sub = cube.sel(time=store_times, method="nearest", tolerance=TIME_TOLERANCE)
        sub = sub.isel(y=slice(*sl.y), x=slice(*sl.x))
        along_time = [v for v in sub.data_vars if {"time", "y", "x"} <= set(sub[v].dims)]
        part = sub[along_time].drop_vars(list(sub.coords))
        part = part.chunk(layout.dask_chunks(part.sizes))
        check_alignment(part, layout, sl.region)
        record = {
            "slice": sl.id, "t": list(sl.t), "y": list(sl.y), "x": list(sl.x), "engine": engine.kind,
            "time_range": [str(np.datetime_as_string(store_times[0], "s")), str(np.datetime_as_string(store_times[-1], "s"))],
            "bytes": int(sum(part[v].nbytes for v in part.data_vars)),
            "sources": slice_sources(sub, found),
            "committed": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        wrote = engine.write_slice(part, sl.region, record)
    except BaseException as exc:
        record_failure(request.output, sl.id, exc)
        raise
    clear_failure(request.output, sl.id)
    return record if wrote else None


def finalise(request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec, report: BackfillReport,
             kind: str = "backfill") -> BackfillReport:
    """Merge provenance into the root attributes, write the STAC item/collection, journal the run."""
    from pipeline.store.stac import write_stac

    engine = open_engine(request.output, spec.engine)
    store = engine.open()
    sources = json.loads(store.attrs.get("eocube:source_items", "{}"))
    for sensor, s in found.items():
        sources[sensor] = sorted(set(sources.get(sensor, [])) | {i.id for i in s.items})
    window = {"start": request.start.isoformat(), "end": request.end.isoformat()}
    engine.update_attrs({"eocube:source_items": json.dumps(sources), "eocube:last_run": json.dumps({"kind": kind, **window})})
    report.stac_item = str(write_stac(engine))
    record_run(request.output, {"kind": kind, **window, "written": len(report.written), "planned": report.planned,
                                "appended_times": report.appended_times, "engine": engine.kind})
    return report


def backfill(request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec = BackfillSpec(),
             progress: Callable[[int, int], None] | None = None, kind: str = "backfill") -> BackfillReport:
    """Prepare, write every pending slice in turn, finalise; holds the store's writer lock throughout."""
    report = BackfillReport(store=str(request.output), engine=spec.engine)
    with write_lock(request.output, spec.lock_timeout_s):
        cube = lazy_cube(request, found, spec.layout(request))
        pending = prepare(request, found, spec, report, cube)
        for i, sl in enumerate(pending):
            record = write_slice(request, found, spec, sl, cube)
            (report.written if record else report.skipped_concurrent).append(sl.id)
            if progress:
                progress(i + 1, len(pending))
        return finalise(request, found, spec, report, kind)


def engine_of(path: Path | str) -> Engine:
    """The engine of an existing store (Icechunk repository or plain Zarr)."""
    return open_engine(path)


def update_request(path: Path | str, until: dt.date | None = None) -> CubeRequest:
    """The request of an incremental update: the store's own request, from its last time step to ``until``.

    ``until`` defaults to today (UTC). Items acquired on the store's last day are
    searched again; only time steps after the last one are appended. The bands are
    pinned to the store's (a window where one sensor has no items must not change them).
    """
    store = engine_of(path).open()
    if "eocube:request" not in store.attrs:
        raise StoreError(f"{path} has no eocube:request attribute; it was not written by eocube")
    fields = json.loads(store.attrs["eocube:request"])
    last = dt.date.fromisoformat(str(np.datetime_as_string(store.time.values[-1], "D")))
    until = until or dt.datetime.now(dt.timezone.utc).date()
    if until < last:
        raise ValueError(f"update window ends {until}, before the store's last time step {last}")
    fields.update(start=last.isoformat(), end=until.isoformat(), output=str(path))
    fields["bands"] = fields.get("bands") or [str(v) for v in store.data_vars if v not in ("valid", "spatial_ref")]
    return CubeRequest.model_validate(fields)
