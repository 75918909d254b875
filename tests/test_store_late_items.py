"""Items published late, for dates a store lacks: an incremental update inserts their time steps in
order (plain Zarr: a new store swapped in atomically; Icechunk: one commit), writes their slices, and
the provenance lists exactly the items whose pixels are in the store.

Pure helpers (time merge, chunk moves, record remap) and the engines on small synthetic stores first,
then real backfills and updates on the demo archive, and a SIGKILL during the Zarr insert."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

import test_store_backfill
from pipeline.catalog.search import SensorItems
from pipeline.chain.slices import (
    BackfillSpec,
    backfill,
    held_time_steps,
    late_items_for_held_dates,
    prepare,
    update_request,
)
from pipeline.store.cf import encodings
from pipeline.store.engines import (
    IcechunkEngine,
    ZarrEngine,
    committed_sources,
    open_engine,
    store_sources,
    swap_into_place,
)
from pipeline.store.journal import runs
from pipeline.store.layout import (
    Slice,
    StoreLayout,
    TimeMove,
    covered_times,
    drop_superseded,
    merge_time_axes,
    plan_slices,
    plan_time_moves,
    remap_slice_record,
    with_time_range,
)
from pipeline.store.stac import stac_paths
from pipeline.store.status import store_status
from test_store_backfill import assert_same_data, make_request

reference = test_store_backfill.reference  # the uninterrupted one-shot store (a fixture)

REPO = Path(__file__).resolve().parents[1]


# --- pure helpers ------------------------------------------------------------------------------------------------


def days(*d: int) -> np.ndarray:
    return np.array([f"2022-03-{i:02d}T10:00" for i in d], "datetime64[ns]")


def test_merge_time_axes_places_inserted_steps_in_order():
    merge = merge_time_axes(days(1, 4, 6, 9), days(5, 2, 10))
    np.testing.assert_array_equal(merge.times, days(1, 2, 4, 5, 6, 9, 10))
    assert merge.old_to_new.tolist() == [0, 2, 4, 5]
    assert merge.inserted.tolist() == [3, 1, 6]  # in the order given
    assert merge_time_axes(days(1, 2), days(3)).old_to_new.tolist() == [0, 1]
    with pytest.raises(ValueError, match="repeat"):
        merge_time_axes(days(1, 2), days(2))
    with pytest.raises(ValueError, match="not strictly increasing"):
        merge_time_axes(days(2, 1), days(3))


def test_plan_time_moves_whole_chunks_and_partial_runs():
    # time chunk 1: every move is a whole chunk
    assert plan_time_moves([0, 2, 3], 1, 4) == [
        TimeMove((0, 1), (0, 1), True),
        TimeMove((1, 2), (2, 3), True),
        TimeMove((2, 3), (3, 4), True),
    ]
    # chunk 2, one step inserted at 2: [0,2) stays whole, [2,4) -> [3,5) straddles two new chunks
    assert plan_time_moves([0, 1, 3, 4], 2, 5) == [TimeMove((0, 2), (0, 2), True), TimeMove((2, 4), (3, 5), False)]
    # chunk 2, inserted at 1 and 3: old [0,2) splits into two runs; old [2,4) -> [4,6) is whole again
    assert plan_time_moves([0, 2, 4, 5], 2, 6) == [
        TimeMove((0, 1), (0, 1), False),
        TimeMove((1, 2), (2, 3), False),
        TimeMove((2, 4), (4, 6), True),
    ]
    # a partial last chunk is whole only onto the new axis' own partial last chunk
    assert plan_time_moves([0, 1, 4], 2, 5) == [TimeMove((0, 2), (0, 2), True), TimeMove((2, 3), (4, 5), True)]
    assert plan_time_moves([0, 1, 4], 2, 6)[-1] == TimeMove((2, 3), (4, 5), False)


def _record(t: tuple[int, int], sources: dict | None = None) -> dict:
    sl = Slice(t, (0, 50), (50, 100))
    return {
        "slice": sl.id,
        "t": list(t),
        "y": [0, 50],
        "x": [50, 100],
        "engine": "zarr",
        "bytes": 400,
        "time_range": ["a", "b"],
        "sources": sources or {"s2": ["A", "B"]},
        "committed": "now",
    }


def test_remap_slice_record_shifts_splits_or_keeps():
    rec = _record((2, 6))
    assert remap_slice_record(rec, list(range(8))) == [rec]  # nothing moved
    [shifted] = remap_slice_record(rec, [0, 1, 3, 4, 5, 6, 7, 8])
    assert shifted["t"] == [3, 7] and shifted["slice"] == Slice((3, 7), (0, 50), (50, 100)).id
    assert shifted["remapped_from"] == rec["slice"] and shifted["bytes"] == 400
    pieces = remap_slice_record(rec, [0, 1, 2, 3, 5, 6, 7, 8])
    assert [p["t"] for p in pieces] == [[2, 4], [5, 7]] and [p["bytes"] for p in pieces] == [200, 200]
    assert all(p["sources"] == rec["sources"] and p["remapped_from"] == rec["slice"] for p in pieces)
    assert remap_slice_record(pieces[1], [0, 1, 2, 3, 4, 5, 7, 8, 9])[0]["remapped_from"] == rec["slice"]
    # the covered time indices are exactly the old ones moved
    assert covered_times([p["slice"] for p in pieces]) == {((0, 50), (50, 100)): {2, 3, 5, 6}}
    times = days(1, 2, 3, 4, 5, 6, 7, 8)
    assert with_time_range(pieces[1], times)["time_range"] == ["2022-03-06T10:00:00", "2022-03-07T10:00:00"]


def test_a_slice_written_again_supersedes_the_records_it_overlaps():
    old = [_record((0, 4)), {**_record((4, 8)), "slice": Slice((4, 8), (0, 50), (50, 100)).id}]
    again = {**_record((0, 2)), "slice": Slice((0, 2), (0, 50), (50, 100)).id}
    elsewhere = {**_record((0, 4)), "y": [50, 100], "slice": Slice((0, 4), (50, 100), (50, 100)).id}
    kept = drop_superseded([again, elsewhere, *old])  # newest first
    assert sorted(kept) == sorted([again["slice"], elsewhere["slice"], old[1]["slice"]])
    # the cells of the dropped record the new one does not cover are uncovered: planned again
    assert covered_times(list(kept))[((0, 50), (50, 100))] == {0, 1, 4, 5, 6, 7}
    assert drop_superseded([old[0], {"slice": "legacy"}]).keys() == {old[0]["slice"], "legacy"}


def test_committed_sources_is_the_union_of_the_records():
    records = [_record((0, 1), {"s2": ["B", "A"]}), _record((1, 2), {"s2": ["C"], "landsat": ["L1"]}), {"t": [2, 3]}]
    assert committed_sources(records) == {"landsat": ["L1"], "s2": ["A", "B", "C"]}


class _Item:
    def __init__(self, id_: str, when: str):
        self.id, self.properties = id_, {"datetime": when}


def test_held_dates_and_late_items_for_them():
    store_times, store_sensors = days(1, 3, 5), np.array(["s2", "landsat", "s2"])
    cube_times = np.array(
        ["2022-03-01T10:30", "2022-03-02T10:00", "2022-03-03T10:00", "2022-03-05T21:00"], "datetime64[ns]"
    )
    held = held_time_steps(store_times, store_sensors, cube_times, np.array(["s2", "s2", "s2", "s2"]))
    assert held.tolist() == [True, False, False, True]  # 03-03 is held for landsat only
    records = [{"slice": "x", "t": [0, 2], "sources": {"s2": ["S1"], "landsat": ["L3"]}}]  # step 2 not committed
    found = {
        "s2": SensorItems(
            "s2",
            "c",
            "p",
            [
                _Item("S1", "2022-03-01T10:00:00"),
                _Item("S1b", "2022-03-01T10:05:00"),
                _Item("S5b", "2022-03-05T10:00:00"),
                _Item("S2", "2022-03-02T10:00:00"),
            ],
        ),
        "landsat": SensorItems("landsat", "c", "p", [_Item("L3", "2022-03-03T10:00:00")]),
    }
    # S1b: a second item for a held, committed date; S5b: its date is held but not committed yet (the slice
    # still to write will read it); S2: a date the store lacks
    assert late_items_for_held_dates(store_times, store_sensors, records, found) == {"s2": ["S1b"]}


# --- engines on synthetic stores -----------------------------------------------------------------------------------

ALL_DAYS = (1, 2, 4, 5, 7, 8, 10)
SENSOR = {d: ("landsat" if d % 3 == 2 else "s2") for d in range(1, 32)}  # 2, 5, 8: landsat


def synthetic(day_list=ALL_DAYS) -> xr.Dataset:
    """A (time, y, x) cube whose values say their day and pixel; coordinates along time like the pipeline's."""
    times = days(*day_list)
    red = np.array([[[d * 100 + y * 4 + x for x in range(4)] for y in range(4)] for d in day_list], "float32")
    red[:, 0, 0] = np.nan
    sensors = np.array([SENSOR[d] for d in day_list], dtype=np.dtypes.StringDType())
    return xr.Dataset(
        {"red": (("time", "y", "x"), red), "valid": (("time", "y", "x"), ~np.isnan(red))},
        coords={
            "time": times,
            "y": np.arange(4.0),
            "x": np.arange(4.0),
            "sensor": ("time", sensors),
            "cloud_cover": ("time", np.array(day_list, "float32")),
        },
        attrs={"eocube:version": "test", "eocube:source_items": "{}"},
    )


def write_pending(engine, full: xr.Dataset, layout: StoreLayout, tile: int = 2, step: int = 2) -> list[str]:
    """Write the slices of ``engine``'s store still uncommitted from ``full`` (matched by time)."""
    store = engine.open()
    pending = plan_slices(dict(store.sizes), layout, tile, step, covered_times(list(engine.committed())))
    for sl in pending:
        times = store.time.values[slice(*sl.t)]
        part = full.sel(time=times).isel(y=slice(*sl.y), x=slice(*sl.x))
        record = {
            "slice": sl.id,
            "t": list(sl.t),
            "y": list(sl.y),
            "x": list(sl.x),
            "engine": engine.kind,
            "time_range": [str(np.datetime_as_string(times[i], "s")) for i in (0, -1)],
            "bytes": 1,
            "sources": {},
            "committed": "now",
        }
        for s in sorted({str(v) for v in part["sensor"].values}):
            record["sources"][s] = [
                f"{s}-{str(t)[:10]}" for t, ps in zip(times, part["sensor"].values, strict=True) if ps == s
            ]
        engine.write_slice(
            part[["red", "valid"]].drop_vars(list(part.coords)).chunk(layout.dask_chunks(part.sizes)), sl.region, record
        )
    return [sl.id for sl in pending]


def make_engine(kind: str, path: Path, chunks: dict, shards: dict | None = None):
    first = synthetic([d for d in ALL_DAYS if d not in (2, 5)])
    engine = ZarrEngine(path) if kind == "zarr" else IcechunkEngine(path)
    template = first.chunk(StoreLayout(chunks, shards).dask_chunks(first.sizes))
    template = template.assign_coords({c: template[c].load() for c in template.coords if c not in template.dims})
    engine.create(template, encodings(template, chunks, shards))
    return engine, first


def assert_matches(engine, full: xr.Dataset) -> None:
    ds = engine.open().load()
    np.testing.assert_array_equal(ds.time.values, full.time.values)
    for v in ("red", "valid", "sensor", "cloud_cover"):
        np.testing.assert_array_equal(ds[v].values, full[v].values, err_msg=v)
    records = engine.committed()
    for r in records.values():
        assert r["time_range"] == [
            str(np.datetime_as_string(ds.time.values[i], "s")) for i in (r["t"][0], r["t"][1] - 1)
        ]
    cells = sum(int(np.prod([b - a for a, b in (r["t"], r["y"], r["x"])])) for r in records.values())
    assert cells == int(np.prod([ds.sizes[d] for d in ("time", "y", "x")])), "records overlap or leave holes"
    expected = {
        s: sorted(f"{s}-{str(t)[:10]}" for t, ts in zip(full.time.values, full.sensor.values, strict=True) if ts == s)
        for s in sorted({str(v) for v in full.sensor.values})
    }
    assert committed_sources(records.values()) == expected


@pytest.mark.parametrize("kind", ["zarr", "icechunk"])
@pytest.mark.parametrize(
    "chunks, shards, step",
    [
        ({"time": 1, "y": 2, "x": 2}, None, 2),
        ({"time": 2, "y": 2, "x": 2}, None, 2),
        ({"time": 1, "y": 2, "x": 2}, {"time": 2, "y": 4, "x": 4}, 4),
    ],
    ids=["chunk1", "chunk2", "shard2"],
)
def test_insert_times_moves_data_coordinates_and_records(
    kind: str, chunks: dict, shards: dict | None, step: int, tmp_path: Path
):
    layout = StoreLayout(chunks, shards)
    tile = 4 if shards else 2
    engine, first = make_engine(kind, tmp_path / f"s.{kind}", chunks, shards)
    write_pending(engine, first, layout, tile, step)
    before = engine.open().attrs
    full = synthetic()
    engine.insert_times(full.sel(time=days(2, 5)))
    ds = engine.open()
    np.testing.assert_array_equal(ds.time.values, full.time.values)
    assert ds.attrs == before, "root attributes must stay"
    assert np.isnan(ds["red"].isel(time=[1, 3]).values).all() and not ds["valid"].isel(time=[1, 3]).values.any()
    covered = covered_times(list(engine.committed()))
    assert len(covered) == (4 // tile) ** 2 and all(v == {0, 2, 4, 5, 6} for v in covered.values())
    written = write_pending(engine, full, layout, tile, step)
    assert written and all(Slice.from_id(s).t in ((1, 2), (3, 4)) for s in written)
    assert_matches(engine, full)
    if kind == "zarr":
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr.")], "a hidden folder was left"


def test_zarr_insert_hard_links_whole_chunks(tmp_path: Path):
    chunks = {"time": 1, "y": 2, "x": 2}
    engine, first = make_engine("zarr", tmp_path / "s.zarr", chunks)
    write_pending(engine, first, StoreLayout(chunks))
    chunk = engine.path / "cube" / "red" / "c" / "4" / "1" / "1"  # day 10: old index 4, new index 6
    inode = chunk.stat().st_ino
    engine.insert_times(synthetic().sel(time=days(2, 5)))
    assert (engine.path / "cube" / "red" / "c" / "6" / "1" / "1").stat().st_ino == inode
    assert not (engine.path / "cube" / "red" / "c" / "1" / "1" / "1").exists()  # the inserted step holds no data yet


def test_icechunk_insert_is_one_commit_and_later_inserts_compose(tmp_path: Path):
    chunks = {"time": 1, "y": 2, "x": 2}
    layout = StoreLayout(chunks)
    engine, first = make_engine("icechunk", tmp_path / "s.icechunk", chunks)
    write_pending(engine, first, layout)
    full = synthetic()
    n_commits = len(list(engine._repo().ancestry(branch="main")))
    engine.insert_times(full.sel(time=days(5)))
    snaps = list(engine._repo().ancestry(branch="main"))
    assert len(snaps) == n_commits + 1 and snaps[0].metadata["eocube:op"] == "insert"
    assert snaps[0].metadata["eocube:time_remap"]["old_to_new"] == [0, 1, 3, 4, 5]
    engine.insert_times(full.sel(time=days(2)))  # a second insert before any slice of the first is written
    write_pending(engine, full, layout)
    assert_matches(engine, full)


def test_zarr_insert_failing_at_the_swap_leaves_the_old_store(tmp_path: Path, monkeypatch):
    from pipeline.store import engines

    chunks = {"time": 1, "y": 2, "x": 2}
    engine, first = make_engine("zarr", tmp_path / "s.zarr", chunks)
    write_pending(engine, first, StoreLayout(chunks))
    before = engine.open().load()
    records = engine.committed()

    def broken(new, path):
        raise OSError("disk gone")

    monkeypatch.setattr(engines, "swap_into_place", broken)
    with pytest.raises(OSError, match="disk gone"):
        engine.insert_times(synthetic().sel(time=days(2, 5)))
    xr.testing.assert_identical(engine.open().load(), before)
    assert engine.committed() == records
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_swap_fallback_and_recover_after_kills(tmp_path: Path, monkeypatch):
    from pipeline.store import engines, paths

    chunks = {"time": 1, "y": 2, "x": 2}
    engine, _ = make_engine("zarr", tmp_path / "s.zarr", chunks)
    new = tmp_path / "new"
    new.mkdir()
    (new / "marker").write_text("new")
    monkeypatch.setattr(paths, "_exchange", lambda a, b: False)
    old = swap_into_place(new, engine.path)
    assert (engine.path / "marker").read_text() == "new" and ZarrEngine(old).exists()
    assert engines.leftover_pattern(engine.path).fullmatch(old.name)
    # killed between the two renames of the fallback: the store is missing, its old copy is put back
    engine.path.rename(tmp_path / "elsewhere")
    assert engine.recover() == [old] and engine.exists() and not old.exists()
    # killed before or after the swap: hidden folders of ours holding a store (or nothing) are removed
    leftovers = [tmp_path / ".s.zarr.insert-0123456789abcdef", tmp_path / ".s.zarr.old-89abcdef"]
    ZarrEngine(tmp_path / "s.zarr").path.rename(leftovers[0])
    (tmp_path / "elsewhere").rename(tmp_path / "s.zarr")  # any folder at the path will do for this check
    (tmp_path / "s.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "s.zarr" / "eocube-manifest").mkdir()
    leftovers[1].mkdir()
    foreign = [
        tmp_path / ".s.zarr.insert-notours",
        tmp_path / ".s.zarr.old-0123abcd",
        tmp_path / ".t.zarr.old-0123abcd",
    ]
    for f in foreign:
        f.mkdir()
        (f / "data.txt").write_text("someone else's")
    assert sorted(engine.recover()) == sorted(leftovers)
    assert all(f.exists() for f in foreign) and not any(p.exists() for p in leftovers)


# --- real stores on the demo archive -------------------------------------------------------------------------------

#: Items "published late": absent from the first backfill's search, found by the update.
LATE = {
    "sentinel-2": "S2B_MSIL2A_20220316T101031_R022_T32TPR_20220316T131031",
    "landsat": "LC08_L2SP_193028_20220314_02_T1",
}


def without_late(found: dict[str, SensorItems]) -> dict[str, SensorItems]:
    from dataclasses import replace

    return {k: replace(s, items=[i for i in s.items if i.id not in LATE.values()]) for k, s in found.items()}


def with_a_second_item_for_a_held_date(found: dict[str, SensorItems]) -> dict[str, SensorItems]:
    """A copy, under another id, of the Sentinel-2 item of 2022-03-01 (same pixels): published late for a date
    the store holds. The update writes the slices of that date its footprint meets again, with it."""
    from dataclasses import replace

    s2 = found["sentinel-2"]
    twin = s2.items[0].clone()
    twin.id = s2.items[0].id + "_twin"
    return {**found, "sentinel-2": replace(s2, items=[twin, *s2.items])}


def item_ids(found: dict[str, SensorItems]) -> dict[str, list[str]]:
    return {k: sorted(i.id for i in s.items) for k, s in sorted(found.items())}


def derived_from(store: Path) -> list[str]:
    item = json.loads(stac_paths(store)[0].read_text())
    return sorted(lk["title"] for lk in item["links"] if lk["rel"] == "derived_from")


def provenance(store: Path) -> dict[str, list[str]]:
    return json.loads(open_engine(store).open().attrs["eocube:source_items"])


@pytest.mark.parametrize("engine", ["zarr", "icechunk"])
def test_update_inserts_the_dates_of_items_published_late(
    engine: str, demo_archive: Path, reference: xr.Dataset, tmp_path: Path
):
    from pipeline.chain.search import search

    store = tmp_path / f"cube.{engine}"
    spec = BackfillSpec(engine=engine, tile_px=50, time_step=4)
    request = make_request(store)
    full = search(request, demo_archive)
    first = without_late(full)
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, first, spec)
        first_times = open_engine(store).open().time.values
        n_first = len(first_times)
        assert n_first == reference.sizes["time"] - 2
        assert provenance(store) == item_ids(first) and not set(LATE.values()) & set(derived_from(store))
        update = update_request(store, until=dt.date(2022, 3, 31))
        assert update.start == request.start and update.end == dt.date(2022, 3, 31)
        found = with_a_second_item_for_a_held_date(search(update, demo_archive))
        report = backfill(update, found, spec, kind="update")
    assert report.inserted_times == 2 and report.appended_times == 0 and report.late_items_for_held_dates == 1
    ds = open_engine(store).open().load()
    inserted = set(np.flatnonzero(~np.isin(ds.time.values, first_times)).tolist())
    twin_step = int(
        np.flatnonzero(
            (ds.time.values.astype("datetime64[D]") == np.datetime64("2022-03-01"))
            & (ds.sensor.values.astype(object) == "sentinel-2")
        )[0]
    )
    written = [set(range(*Slice.from_id(s).t)) for s in report.written]
    assert all(w & inserted or twin_step in w for w in written), "only the new steps and the twin's date"
    assert {i for w in written for i in w} >= inserted | {twin_step}
    assert all(len(w) == 1 for w in written if twin_step not in w), "an inserted step is written on its own"
    assert (np.diff(ds.time.values) > np.timedelta64(0)).all()
    assert_same_data(ds, reference)
    in_store = item_ids(found)  # the twin's date was written again with it: it is listed
    assert provenance(store) == in_store == store_sources(open_engine(store))
    assert derived_from(store) == sorted(i for ids in in_store.values() for i in ids)
    last = runs(store)[-1]
    assert (last["kind"], last["inserted_times"], last["late_items_for_held_dates"]) == ("update", 2, 1)
    assert store_status(store).committed_fraction == 1.0
    assert prepare(update, found, spec) == [], "a re-run must find nothing to do"
    assert not [p for p in tmp_path.iterdir() if ".insert-" in p.name or ".old-" in p.name]


KILLED_UPDATE = textwrap.dedent("""
    import datetime as dt, os, signal, sys
    from pathlib import Path
    import dask
    from pipeline.chain.search import search
    from pipeline.store import engines
    from pipeline.chain.slices import BackfillSpec, backfill, update_request

    store, archive, when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    swap = engines.swap_into_place

    def killed(new, path):
        if when == "after":
            swap(new, path)
        os.kill(os.getpid(), signal.SIGKILL)

    engines.swap_into_place = killed
    update = update_request(store, until=dt.date(2022, 3, 31))
    with dask.config.set(scheduler="synchronous"):
        backfill(update, search(update, archive), BackfillSpec(engine="zarr", tile_px=50, time_step=4), kind="update")
""")


def test_a_killed_zarr_insert_leaves_one_whole_store_and_a_rerun_completes(
    demo_archive: Path, reference: xr.Dataset, tmp_path: Path
):
    from pipeline.chain.search import search

    store = tmp_path / "cube.zarr"
    spec = BackfillSpec(engine="zarr", tile_px=50, time_step=4)
    request = make_request(store)
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, without_late(search(request, demo_archive)), spec)
    before = xr.open_zarr(store, group="cube").load()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for when in ("before", "after"):
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_UPDATE, str(store), str(demo_archive), when],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".cube.zarr.insert-")]
        assert len(hidden) == 1 and ZarrEngine(hidden[0]).exists(), "the kill leaves one hidden store"
        ds = xr.open_zarr(store, group="cube").load()
        if when == "before":  # the old store, untouched
            xr.testing.assert_identical(ds, before)
        else:  # the new one: every old time step and record in place, the inserted steps still empty
            assert ds.sizes["time"] == before.sizes["time"] + 2
            assert not ds["valid"].isel(time=np.flatnonzero(~np.isin(ds.time.values, before.time.values))).values.any()
            xr.testing.assert_identical(
                ds.sel(time=before.time.values)[list(before.data_vars)], before[list(before.data_vars)]
            )
            assert len(ZarrEngine(store).committed()) > len(list((hidden[0] / "eocube-manifest").glob("*.json")))
    with dask.config.set(scheduler="threads", num_workers=2):
        update = update_request(store, until=dt.date(2022, 3, 31))
        report = backfill(update, search(update, demo_archive), spec, kind="update")
    assert report.inserted_times == 0 and report.written, "the insert was done; its slices are written now"
    assert not [p for p in tmp_path.iterdir() if ".insert-" in p.name or ".old-" in p.name]
    assert_same_data(xr.open_zarr(store, group="cube").load(), reference)


def test_store_update_prints_what_it_added(monkeypatch, tmp_path: Path):
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import pipeline.chain
    from pipeline.cli.store import app

    report = SimpleNamespace(
        store=str(tmp_path / "cube.zarr"),
        appended_times=3,
        inserted_times=2,
        written=["a", "b"],
        late_items_for_held_dates=1,
        failed_items={},
    )
    monkeypatch.setattr(pipeline.chain, "update_store", lambda *a, **k: report)
    result = CliRunner().invoke(app, ["update", str(tmp_path / "cube.zarr"), "--until", "2022-03-31"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "3 time steps appended, 2 inserted (items published late), 2 slices written" in text
    assert "1 items published late for dates already held (their slices written again)" in text
