"""The chain's cube, slice by slice: transactional, resumable backfills and incremental updates of a store.

A request's grid and time axis are split into slices (tiles x time ranges, see
:func:`~pipeline.store.layout.plan_slices`), each written and committed on its own
(:mod:`pipeline.store.engines`). Re-running skips committed slices, so a run killed at
any point and re-run yields the same data as an uninterrupted one. Once the cube's
slices are committed, :func:`backfill` makes the request's derived products tile by
tile (:mod:`pipeline.chain.units`).

An incremental update (:func:`update_request`) searches the store's whole period, from
its request's start to ``until``, and adds the time steps of the items found for dates the
store lacks: after its last time step (appended), or before it (items published late,
inserted in time order; :meth:`~pipeline.store.engines.ZarrEngine.insert_times`). Their
slices are then written like any other. Items found for dates the store already holds that
no committed slice lists (published after those slices were written) get the slices their
footprint touches written again (:func:`slices_touched_by`), and so the derived products of
exactly those tiles are made again. The provenance (``eocube:source_items``,
the STAC item's ``derived_from`` links) is the union of the committed slices' sources:
exactly the items whose pixels are in the store.

The steps are plain functions (:func:`prepare`, :func:`write_slice`, :func:`finalise`)
so the Prefect flows in ``flows/backfill.py`` can run slices as concurrent tasks;
:func:`backfill` runs them side by side on threads, their work on the active Dask scheduler.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline import __version__
from pipeline.catalog.search import SensorItems
from pipeline.chain.concurrency import distributed_client, side_by_side
from pipeline.cube.assemble import LazyCube, check_failed_fraction, request_cube
from pipeline.cube.load import items_per_time
from pipeline.cube.readers import item_time
from pipeline.model import CubeRequest, Progress
from pipeline.redaction import redact_json
from pipeline.store.cf import annotate_cf, encodings
from pipeline.store.engines import (
    ENGINES,
    Engine,
    ZarrEngine,
    committed_sources,
    leftovers,
    open_engine,
    store_sources,
)
from pipeline.store.journal import clear_failure, record_failure, record_run, write_lock
from pipeline.store.layout import Slice, StoreLayout, check_alignment, covered_times, plan_slices
from pipeline.store.paths import check_output, is_eocube_store, is_partial, remove_store
from pipeline.store.zarr_store import StoreError, provenance_attrs, request_attr

#: Two time steps of one sensor this close are the same date (solar day; as ``items_per_time`` groups items).
SAME_DATE = np.timedelta64(12, "h")


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
    """What a run did: slices planned/written/skipped, the STAC item path, and the time steps added.

    ``appended_times``: new time steps after the store's last one; ``inserted_times``: new
    time steps before it (items published late, for dates the store lacked), inserted in
    order; ``late_items_for_held_dates``: items found for dates the store already holds
    and has committed, that no committed slice listed (published late): the slices they
    touch are written again with them (:func:`slices_touched_by`);
    ``failed_items``: ``{item_id: {asset: reason}}`` of the store's items that failed to read.
    """

    store: str
    engine: str
    planned: int = 0
    written: list[str] = field(default_factory=list)
    skipped_concurrent: list[str] = field(default_factory=list)
    appended_times: int = 0
    inserted_times: int = 0
    late_items_for_held_dates: int = 0
    stac_item: str | None = None
    failed_items: dict[str, dict[str, str]] = field(default_factory=dict)
    units: list[str] = field(default_factory=list)
    not_computed: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))


def lazy_cube(request: CubeRequest, found: dict[str, SensorItems], layout: StoreLayout) -> LazyCube:
    """The request's lazy cube, CF-annotated, with provenance, in Dask chunks of whole shards."""
    lazy = request_cube(request, found)
    cube = lazy.data.assign_attrs(provenance_attrs(request.model_dump(mode="json"), lazy.sources))
    cube = annotate_cf(cube).chunk(layout.dask_chunks(cube.sizes))
    # labels along time (sensor) are written with the skeleton, so they must be in memory
    return replace(lazy, data=cube.assign_coords({c: cube[c].load() for c in cube.coords if c not in cube.dims}))


def discard_for_overwrite(request: CubeRequest) -> bool:
    """With ``request.overwrite``, remove the eocube store at its output so the backfill starts over
    (the caller holds the writer lock); anything else there is refused. True if a store was removed."""
    path = Path(request.output)
    if not request.overwrite or not path.exists():
        return False
    check_output(path, overwrite=True)
    remove_store(path)
    return True


def _check_same_grid(store: xr.Dataset, cube: xr.Dataset, path: Path) -> None:
    for dim in ("y", "x"):
        if store.sizes[dim] != cube.sizes[dim] or not np.allclose(store[dim].values, cube[dim].values):
            raise StoreError(f"{path}: the request's {dim} grid differs from the store's; use another output path")
    missing = sorted(str(v) for v in set(cube.data_vars) - set(store.data_vars))
    if missing:
        raise StoreError(f"{path}: the store lacks variables {missing} of the request")


def _sensors(ds: xr.Dataset) -> np.ndarray | None:
    return np.array([str(s) for s in ds["sensor"].values], dtype=object) if "sensor" in ds.coords else None


def held_time_steps(
    store_times: np.ndarray, store_sensors: np.ndarray | None, times: np.ndarray, sensors: np.ndarray | None
) -> np.ndarray:
    """For each time step ``times[i]`` (of sensor ``sensors[i]``), whether the store holds its date: a
    time step of the same sensor within :data:`SAME_DATE` (12 h). Without sensors, any time step counts."""
    held = np.zeros(len(times), bool)
    for i, t in enumerate(times):
        same = store_times if sensors is None or store_sensors is None else store_times[store_sensors == sensors[i]]
        held[i] = bool(len(same) and (np.abs(same - t) <= SAME_DATE).any())
    return held


def late_items_for_held_dates(
    store_times: np.ndarray, store_sensors: np.ndarray | None, records: list[dict], found: dict[str, SensorItems]
) -> dict[str, list[str]]:
    """Found items of dates the store holds and has committed (in at least one slice) that no committed
    slice lists, per sensor: published after those slices were written, so their pixels are missing.

    ``records`` are the committed slice records, their ``t`` in the indices of ``store_times``.
    """
    listed = committed_sources(records)
    covered = np.zeros(len(store_times), bool)
    for r in records:
        covered[slice(*r["t"])] = True
    out: dict[str, list[str]] = {}
    for sensor, s in found.items():
        steps = covered if store_sensors is None else covered & (store_sensors == sensor)
        candidates, known = store_times[steps], set(listed.get(sensor, []))
        for item in s.items:
            if item.id not in known and (np.abs(candidates - item_time(item)) <= SAME_DATE).any():
                out.setdefault(sensor, []).append(item.id)
    return out


def add_time_steps(engine: Engine, cube: xr.Dataset) -> tuple[int, int]:
    """Add to the store the cube's time steps for dates it lacks; returns ``(appended, inserted)``.

    Steps after the store's last one only: appended (cheap). Any earlier: all new steps go
    in with one atomic insert (:meth:`~pipeline.store.engines.ZarrEngine.insert_times`), after
    the derived products are dropped (every one of their units is made again from the new cube).
    """
    store = engine.open()
    new = ~held_time_steps(store.time.values, _sensors(store), cube.time.values, _sensors(cube))
    after = new & (cube.time.values > store.time.values[-1]) if store.sizes["time"] else new
    if (new & ~after).any():
        from pipeline.chain.products import PRODUCTS

        engine.drop_groups(list(PRODUCTS))
        engine.insert_times(cube.isel(time=np.flatnonzero(new)))
    elif after.any():
        engine.append_times(cube.isel(time=np.flatnonzero(after)))
    return int(after.sum()), int((new & ~after).sum())


def prepare(
    request: CubeRequest,
    found: dict[str, SensorItems],
    spec: BackfillSpec,
    report: BackfillReport | None = None,
    cube: LazyCube | None = None,
) -> list[Slice]:
    """Create the store (or add the time steps of dates it lacks) and return the slices still to write.

    A hidden folder left by a killed insert is cleaned up first (the caller holds the
    writer lock). The store is created with empty provenance (no slice committed yet).
    Cube time steps for dates the store lacks are appended or inserted
    (:func:`add_time_steps`); those the store holds are left as they are, and found
    items it lacks for them are counted (:func:`late_items_for_held_dates`). The items the
    probe left out are recorded in the root attribute ``eocube:unreadable_items``. Slices
    committed with failed reads are planned again (their pixels are read again). With
    ``request.overwrite`` an existing store is removed first (:func:`discard_for_overwrite`).
    """
    discard_for_overwrite(request)
    engine = open_engine(request.output, spec.engine)
    engine.recover()
    layout = spec.layout(request)
    lazy = lazy_cube(request, found, layout) if cube is None else cube
    cube_data = lazy.data
    if not engine.exists():
        skeleton = cube_data.assign_attrs({"eocube:source_items": json.dumps({})})
        engine.create(skeleton, encodings(skeleton, layout.chunks, layout.shards))
    else:
        _check_same_grid(engine.open(), cube_data, engine.path)
        appended, inserted = add_time_steps(engine, cube_data)
        if report is not None:
            report.appended_times, report.inserted_times = appended, inserted
    engine.update_attrs({"eocube:unreadable_items": json.dumps(redact_json(lazy.unreadable))})
    store = engine.open()
    records = list(engine.committed().values())
    late = late_items_for_held_dates(store.time.values, _sensors(store), records, found)
    stale = slices_touched_by(late, found, store, records)
    complete = [r["slice"] for r in records if not r.get("failed") and r["slice"] not in stale]
    pending = plan_slices(dict(store.sizes), layout, spec.tile_px, spec.time_step, covered_times(complete))
    if report is not None:
        report.planned = len(pending)
        report.late_items_for_held_dates = sum(len(v) for v in late.values())
    return pending


def slices_touched_by(
    late: dict[str, list[str]], found: dict[str, SensorItems], store: xr.Dataset, records: list[dict]
) -> set[str]:
    """The committed slices a late item's pixels belong in: their time range holds its date (same sensor,
    same solar day) and their tile meets its footprint. They are written again, with the item."""
    from pyproj import Transformer

    items = {i.id: (sensor, i) for sensor, s in found.items() for i in s.items}
    late_items = [items[i] for ids in late.values() for i in ids if i in items]
    if not late_items:
        return set()
    to_grid = Transformer.from_crs("EPSG:4326", store["spatial_ref"].attrs["crs_wkt"], always_xy=True)
    times, sensors = store.time.values, _sensors(store)
    x, y = store.x.values, store.y.values
    out: set[str] = set()
    for sensor, item in late_items:
        same = np.abs(times - item_time(item)) <= SAME_DATE
        if sensors is not None:
            same &= sensors == sensor
        steps = set(np.flatnonzero(same).tolist())
        if item.bbox is None:
            raise ValueError(f"item {item.id} has no bbox: cannot tell which slices it touches")
        lon0, lat0, lon1, lat1 = item.bbox
        lons, lats = np.meshgrid(np.linspace(lon0, lon1, 5), np.linspace(lat0, lat1, 5))
        gx, gy = to_grid.transform(lons.ravel(), lats.ravel())
        cols = np.flatnonzero((x >= min(gx)) & (x <= max(gx)))
        rows = np.flatnonzero((y >= min(gy)) & (y <= max(gy)))
        if not (steps and cols.size and rows.size):
            continue
        for r in records:
            if (
                steps & set(range(*r["t"]))
                and r["y"][0] <= rows.max()
                and rows.min() < r["y"][1]
                and r["x"][0] <= cols.max()
                and cols.min() < r["x"][1]
            ):
                out.add(r["slice"])
    return out


def match_steps(
    store_times: np.ndarray, store_sensors: np.ndarray | None, cube_times: np.ndarray, cube_sensors: np.ndarray | None
) -> np.ndarray:
    """For each store time step, the index of the cube's step of the same date (same sensor, within
    :data:`SAME_DATE`; the nearest). A date an item published late now starts may have moved a little."""
    out = np.empty(len(store_times), np.int64)
    for i, t in enumerate(store_times):
        candidates = np.arange(len(cube_times))
        if store_sensors is not None and cube_sensors is not None:
            candidates = candidates[cube_sensors == store_sensors[i]]
        if not candidates.size:
            raise StoreError(f"the cube has no {store_sensors[i] if store_sensors is not None else ''} step for {t}")
        nearest = candidates[np.argmin(np.abs(cube_times[candidates] - t))]
        if abs(cube_times[nearest] - t) > SAME_DATE:
            raise StoreError(f"the cube has no time step within 12 h of the store's {t}")
        out[i] = nearest
    return out


def as_slice(indices: np.ndarray) -> slice | np.ndarray:
    """``indices`` as a slice where they are a run of consecutive integers (the usual case: a Dask slice of
    whole chunks adds no task, where an index array adds one per chunk), else as they are."""
    if len(indices) and np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
        return slice(int(indices[0]), int(indices[0]) + len(indices))
    return indices


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


def slice_items(sources: dict[str, list[str]]) -> set[str]:
    """Every item id of a slice's ``sources`` (per sensor)."""
    return {i for ids in sources.values() for i in ids}


def slice_bbox(part: xr.Dataset) -> tuple[float, float, float, float]:
    """``xmin, ymin, xmax, ymax`` of the pixels of ``part`` (edges, in its CRS)."""
    x, y = part["x"].values, part["y"].values
    half_x = abs(float(x[1] - x[0])) / 2 if x.size > 1 else 0.0
    half_y = abs(float(y[1] - y[0])) / 2 if y.size > 1 else 0.0
    return (
        float(x.min()) - half_x,
        float(y.min()) - half_y,
        float(x.max()) + half_x,
        float(y.max()) + half_y,
    )


@dataclass
class SliceJob:
    """One slice ready to compute: its lazy ``part``, its ``record`` and ``finish`` (the record with the
    failed reads learnt while the part was computed)."""

    slice: Slice
    part: xr.Dataset
    record: dict
    finish: Callable[[dict], dict]


def slice_job(
    request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec, sl: Slice, engine: Engine, lazy: LazyCube
) -> SliceJob:
    """The :class:`SliceJob` of ``sl``: the time steps of the store's slice, taken from the lazy cube (matched
    by date and sensor), aligned to the store's chunks."""
    layout = spec.layout(request)
    store = engine.open().isel(time=slice(*sl.t))
    store_times, store_sensors = store.time.values, _sensors(store)
    steps = match_steps(store_times, store_sensors, lazy.data.time.values, _sensors(lazy.data))
    sub = lazy.data.isel(time=as_slice(steps))
    sub = sub.isel(y=slice(*sl.y), x=slice(*sl.x))
    along_time = [v for v in sub.data_vars if {"time", "y", "x"} <= set(sub[v].dims)]
    part = sub[along_time].drop_vars(list(sub.coords))
    part = part.chunk(layout.dask_chunks(part.sizes))
    check_alignment(part, layout, sl.region)
    sources = slice_sources(sub, found)
    record = {
        "slice": sl.id,
        "t": list(sl.t),
        "y": list(sl.y),
        "x": list(sl.x),
        "engine": engine.kind,
        "time_range": [
            str(np.datetime_as_string(store_times[0], "s")),
            str(np.datetime_as_string(store_times[-1], "s")),
        ],
        "bytes": int(sum(part[v].nbytes for v in part.data_vars)),
        "sources": sources,
        "committed": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    items, bbox = slice_items(sources), slice_bbox(sub)

    def with_failures(record: dict) -> dict:  # this slice's own: others may be computed beside it
        failed = lazy.reads.failures(items, bbox)
        return {**record, "failed": redact_json(failed)} if failed else record

    return SliceJob(sl, part, record, with_failures)


def write_slice(
    request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec, sl: Slice, cube: LazyCube | None = None
) -> dict | None:
    """Compute one slice on the active Dask scheduler and commit it; its record, or None if
    a concurrent writer committed it first. A failure is journalled and re-raised.

    Reads that fail while the slice is computed are masked and listed in the record's
    ``failed`` (``{item_id: {asset: reason}}``). ``cube`` is :func:`lazy_cube` of the same
    request, built once by callers writing many slices (its failed reads are told apart by the slices'
    items and extent, so slices may be computed side by side).
    """
    engine = open_engine(request.output, spec.engine)
    try:
        lazy = lazy_cube(request, found, spec.layout(request)) if cube is None else cube
        job = slice_job(request, found, spec, sl, engine, lazy)
        wrote = engine.write_slice(job.part, sl.region, job.record, finish=job.finish)
    except BaseException as exc:
        record_failure(request.output, sl.id, exc)
        raise
    clear_failure(request.output, sl.id)
    return job.record if wrote else None


def _zarr_slices_at_once(
    request: CubeRequest, found: dict[str, SensorItems], spec: BackfillSpec, pending: list[Slice], cube: LazyCube
) -> Iterator[tuple[Slice, dict]]:
    """Write the ``pending`` slices of a Zarr store as one Dask computation (one graph: the cube's shared
    read plan is sent once) and commit each slice's record as soon as its chunks are written; yields
    ``(slice, record)`` in the order they are committed. A failure is journalled, the rest cancelled."""
    from distributed import as_completed, default_client

    engine = open_engine(request.output, spec.engine)
    assert isinstance(engine, ZarrEngine)
    client = default_client()
    jobs: list[SliceJob] = []
    for sl in pending:
        try:
            jobs.append(slice_job(request, found, spec, sl, engine, cube))
        except BaseException as exc:
            record_failure(request.output, sl.id, exc)
            raise
    futures = client.compute([engine.slice_writes(job.part, job.slice.region) for job in jobs])
    by_future = {f.key: job for f, job in zip(futures, jobs, strict=True)}
    try:
        for future in as_completed(futures):
            job = by_future[future.key]
            try:
                future.result()
                engine.commit_slice(job.finish(job.record))
            except BaseException as exc:
                record_failure(request.output, job.slice.id, exc)
                raise
            clear_failure(request.output, job.slice.id)
            yield job.slice, job.record
    finally:
        client.cancel(futures)


def finalise(
    request: CubeRequest,
    found: dict[str, SensorItems],
    spec: BackfillSpec,
    report: BackfillReport,
    kind: str = "backfill",
) -> BackfillReport:
    """Set the provenance (the union of the committed slices' sources, :func:`~pipeline.store.engines.store_sources`)
    and the failed items in the root attributes, write the STAC item/collection, journal the run (time steps
    added, late items, failed items). Then raise :class:`~pipeline.cube.assemble.TooManyFailuresError` if more
    of the items found failed than ``request.max_failed_fraction`` allows (the committed slices stay)."""
    from pipeline.store.stac import write_stac

    engine = open_engine(request.output, spec.engine)
    sources = store_sources(engine)
    failed = store_failures(engine)
    report.failed_items = failed
    window = {"start": request.start.isoformat(), "end": request.end.isoformat()}
    engine.update_attrs(
        {
            "eocube:source_items": json.dumps(sources),
            "eocube:failed_items": json.dumps(failed),
            "eocube:last_run": json.dumps({"kind": kind, **window}),
            "eocube:request": request_attr(request.model_dump(mode="json")),
        }
    )  # its latest sections
    finalise_products(engine, sources, failed)
    report.stac_item = str(write_stac(engine))
    record_run(
        request.output,
        {
            "kind": kind,
            **window,
            "written": len(report.written),
            "planned": report.planned,
            "appended_times": report.appended_times,
            "inserted_times": report.inserted_times,
            "late_items_for_held_dates": report.late_items_for_held_dates,
            "failed_items": sorted(failed),
            "engine": engine.kind,
        },
    )
    check_failed_fraction(failed, sum(len(s.items) for s in found.values()), request.max_failed_fraction)
    return report


def finalise_products(engine: Engine, sources: dict[str, list[str]], failed: dict[str, dict[str, str]]) -> None:
    """Provenance of every product group: the store's items and failed reads, its units made and not computed."""
    from pipeline.chain.products import PRODUCTS

    units = engine.units()
    for name in PRODUCTS:
        group = engine.open_group(name)
        if group is None:
            continue
        made = [u for u in units.values() if name in u.get("products", {})]
        missing = {u["unit"]: u["products"][name] for u in made if u["products"][name] != "computed"}
        attrs = {
            "eocube:version": __version__,
            "eocube:source_items": json.dumps(sources),
            "eocube:failed_items": json.dumps(failed),
            "eocube:not_computed": json.dumps(missing),
            "eocube:units": json.dumps({"computed": len(made) - len(missing), "not_computed": len(missing)}),
        }
        if name == "video":
            attrs["eocube:video"] = json.dumps(
                {**json.loads(group.attrs.get("eocube:video", "{}")), **video_rate(engine)}
            )
        engine.update_group_attrs(name, attrs)


def video_rate(engine: Engine) -> dict[str, float]:
    """Bytes and bits per pixel per band of the video product's stacked bands (a Zarr store's chunk files)."""
    from pipeline.store.open import STACKED

    folder = Path(engine.path) / "video" / STACKED
    group = engine.open_group("video")
    if engine.kind != "zarr" or not folder.is_dir() or group is None:
        return {}
    stored = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != "zarr.json")
    samples = int(np.prod(list(group[STACKED].shape)))
    return {"stored_bytes": stored, "bpppb": round(8.0 * stored / max(samples, 1), 4)}


def store_failures(engine: Engine) -> dict[str, dict[str, str]]:
    """The items that failed to read, ``{item_id: {asset: reason}}``: those the probe left out
    (``eocube:unreadable_items``) and those whose reads failed in a committed slice."""
    attrs = engine.open().attrs
    failed: dict[str, dict[str, str]] = {
        k: dict(v) for k, v in json.loads(attrs.get("eocube:unreadable_items", "{}")).items()
    }
    for record in engine.committed().values():
        for item, assets in record.get("failed", {}).items():
            failed.setdefault(item, {}).update(assets)
    return dict(sorted(failed.items()))


def backfill(
    request: CubeRequest,
    found: dict[str, SensorItems],
    spec: BackfillSpec = BackfillSpec(),
    progress: Callable[[int, int], None] | None = None,
    kind: str = "backfill",
    locked: bool = False,
    product_progress: Progress | None = None,
) -> BackfillReport:
    """The whole chain into ``request.output``: prepare, write every pending cube slice (two side by side), make every
    pending unit of the derived products the request names (:mod:`pipeline.chain.units`), finalise.

    Holds the store's writer lock throughout (taken here unless the caller holds it: ``locked``).
    ``progress(done, total)`` after each cube slice; ``product_progress(stage, done, total)`` after each unit.
    """
    report = BackfillReport(store=str(request.output), engine=spec.engine)
    with contextlib.nullcontext() if locked else write_lock(request.output, spec.lock_timeout_s):
        cube = lazy_cube(request, found, spec.layout(request))
        pending = prepare(request, found, spec, report, cube)
        write_slices(request, found, spec, pending, report, cube, progress)
        if request.products():
            make_products(request, spec, report, product_progress)
        return finalise(request, found, spec, report, kind)


def write_slices(
    request: CubeRequest,
    found: dict[str, SensorItems],
    spec: BackfillSpec,
    pending: list[Slice],
    report: BackfillReport,
    cube: LazyCube,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write and commit the ``pending`` slices of ``cube``, noting each in ``report``: a Zarr store's on a
    Dask cluster as one computation, each committed once its chunks are written; otherwise
    :data:`~pipeline.chain.concurrency.SIDE_BY_SIDE` at a time (no worker waits for the end of one slice)."""
    done: Iterable[tuple[Slice, dict | None]]
    if spec.engine == "zarr" and distributed_client() is not None:
        done = _zarr_slices_at_once(request, found, spec, pending, cube)
    else:
        done = zip(pending, side_by_side(lambda sl: write_slice(request, found, spec, sl, cube), pending), strict=True)
    for i, (sl, record) in enumerate(done):
        (report.written if record else report.skipped_concurrent).append(sl.id)
        if progress:
            progress(i + 1, len(pending))


def make_products(
    request: CubeRequest, spec: BackfillSpec, report: BackfillReport, progress: Progress | None = None
) -> None:
    """Make every pending unit of the request's derived products (after the cube slices are committed)."""
    from pipeline.chain.units import make_units

    engine = open_engine(request.output, spec.engine)
    units = make_units(request, engine, spec.tile_px, progress)
    report.units = [u["unit"] for u in units]
    report.not_computed = {
        u["unit"]: {p: s for p, s in u["products"].items() if s != "computed"}
        for u in units
        if any(s != "computed" for s in u["products"].values())
    }


def engine_of(path: Path | str) -> Engine:
    """The engine of an existing store (Icechunk repository or plain Zarr)."""
    return open_engine(path)


def update_request(path: Path | str, until: dt.date | None = None) -> CubeRequest:
    """The request of an incremental update: the store's own request, from its start to ``until``.

    ``until`` defaults to today (UTC). The whole period is searched again, so items
    published late for dates the store lacks are found (and inserted by :func:`prepare`),
    as are items acquired after its last time step (appended). The bands are pinned to
    the store's (a window where one sensor has no items must not change them). A Zarr
    store missing after a killed insert is first put back (under the writer lock).
    """
    if is_partial(path):
        raise StoreError(f"{path} is a run's store in the making, not a store to update: run its request again")
    engine = engine_of(path)
    if not Path(path).exists() and leftovers(Path(path)):
        with write_lock(path, 60.0):
            engine.recover()
    if not is_eocube_store(path):
        raise StoreError(f"{path} is not an eocube store" + ("" if Path(path).exists() else " (it does not exist)"))
    store = engine.open()
    if "eocube:request" not in store.attrs:
        raise StoreError(f"{path} has no eocube:request attribute; it was not written by eocube")
    fields = json.loads(store.attrs["eocube:request"])
    last = dt.date.fromisoformat(str(np.datetime_as_string(store.time.values[-1], "D")))
    until = until or dt.datetime.now(dt.UTC).date()
    if until < last:
        raise ValueError(f"update window ends {until}, before the store's last time step {last}")
    fields.update(end=until.isoformat(), output=str(path), overwrite=False)  # an update never starts over
    fields["bands"] = fields.get("bands") or [str(v) for v in store.data_vars if v not in ("valid", "spatial_ref")]
    return CubeRequest.model_validate(fields)
