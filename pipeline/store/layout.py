"""Chunk and shard layout of a store, and the slices a backfill commits one at a time.

A Zarr v3 *shard* holds several chunks in one object; writing part of a shard is a
read-modify-write of the whole object. Two Dask tasks writing chunks of one shard
concurrently therefore lose each other's data without any error (zarr-python #3682).
This module makes that impossible by construction and refuses anything else:

* :func:`check_alignment` raises unless every *internal* Dask chunk boundary of a
  (region) write falls on a shard boundary;
* :func:`plan_slices` raises unless tiles and time steps are whole shards, so two
  slices written at once never share a shard.

Inserting time steps into a store's time axis (items published late, for dates the
store lacks) moves data to new time indices; the pure helpers at the end
(:func:`merge_time_axes`, :func:`plan_time_moves`, :func:`remap_slice_record`) say where
each old time step goes, which stored chunks move whole, and what becomes of the
committed slice records.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

DIMS = ("time", "y", "x")


class LayoutError(ValueError):
    """A chunk/shard/slice layout that would write one shard from two tasks."""


@dataclass(frozen=True)
class StoreLayout:
    """Zarr chunk shape and optional shard shape per dimension (``time``, ``y``, ``x``; elements)."""

    chunks: Mapping[str, int]
    shards: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        for name, shape in (("chunks", self.chunks), ("shards", self.shards or {})):
            bad = {d: n for d, n in shape.items() if not isinstance(n, int) or n < 1}
            if bad:
                raise LayoutError(f"{name} must be positive integers, got {bad}")
        if self.shards:
            for d, n in self.shards.items():
                c = self.chunks.get(d)
                if c is None or n % c:
                    raise LayoutError(f"shard size {n} along {d!r} is not a multiple of the chunk size {c}")

    def unit(self, dim: str, size: int) -> int:
        """The write unit along ``dim``: the shard size if sharded, else the chunk size (capped at ``size``)."""
        shape = self.shards if self.shards else self.chunks
        return min(shape.get(dim, size), size) if size else 1

    def dask_chunks(self, sizes: Mapping[Hashable, int]) -> dict[str, int]:
        """Dask chunks that write whole shards (or whole chunks when unsharded); ``sizes``: e.g. ``ds.sizes``."""
        return {str(d): self.unit(str(d), n) for d, n in sizes.items() if d in DIMS}


def _internal_boundaries(chunk_sizes: tuple[int, ...], offset: int) -> list[int]:
    bounds, pos = [], offset
    for n in chunk_sizes[:-1]:
        pos += n
        bounds.append(pos)
    return bounds


def check_alignment(ds: xr.Dataset, layout: StoreLayout, region: Mapping[str, slice] | None = None) -> None:
    """Raise :class:`LayoutError` if a Dask chunk boundary of ``ds`` splits a shard (or chunk).

    ``region`` gives the offsets of a region write in the store (defaults to 0). The
    first and last edges may fall anywhere (a single task owns that partial unit);
    every boundary between two Dask chunks must be a multiple of the write unit.
    """
    for name, var in ds.data_vars.items():
        if var.chunks is None:
            continue
        for dim_name, sizes in zip(var.dims, var.chunks, strict=True):
            dim = str(dim_name)
            offset = (region or {}).get(dim, slice(0, None)).start or 0
            unit = (layout.shards or layout.chunks).get(dim)
            if unit is None:
                continue
            wrong = [b for b in _internal_boundaries(sizes, offset) if b % unit]
            if wrong:
                kind = "shard" if layout.shards else "chunk"
                raise LayoutError(
                    f"variable {name!r}: Dask chunk boundary at {dim}={wrong[0]} splits a Zarr {kind} of {unit}; "
                    f"two tasks would write one {kind} (zarr-python #3682). Rechunk to multiples of {unit}."
                )


@dataclass(frozen=True)
class Slice:
    """One unit of commit: a tile of the grid over a range of time steps (store indices, end exclusive)."""

    t: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def id(self) -> str:
        return f"t{self.t[0]:05d}-{self.t[1]:05d}_y{self.y[0]:05d}-{self.y[1]:05d}_x{self.x[0]:05d}-{self.x[1]:05d}"

    @property
    def region(self) -> dict[str, slice]:
        return {"time": slice(*self.t), "y": slice(*self.y), "x": slice(*self.x)}

    @property
    def tile(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return self.y, self.x

    @classmethod
    def from_id(cls, slice_id: str) -> Slice:
        """Parse an id made by :attr:`id`; raises ``ValueError`` on anything else."""
        try:
            (t0, t1), (y0, y1), (x0, x1) = (
                (int(a), int(b)) for a, b in (p[1:].split("-") for p in slice_id.split("_"))
            )
        except ValueError:
            raise ValueError(f"not a slice id: {slice_id!r}") from None
        return cls((t0, t1), (y0, y1), (x0, x1))


def _ranges(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def plan_slices(
    sizes: Mapping[Hashable, int],
    layout: StoreLayout,
    tile_px: int,
    time_step: int,
    covered: Mapping[tuple[tuple[int, int], tuple[int, int]], set[int]] | None = None,
) -> list[Slice]:
    """Slices covering a ``(time, y, x)`` grid, minus what ``covered`` says is committed.

    ``tile_px`` (pixels, both axes) and ``time_step`` (time steps) must be whole write
    units (:meth:`StoreLayout.unit`) so concurrently written slices never share a
    shard. ``covered`` maps a tile to the time indices already committed there; the
    uncommitted runs of each planned time range become the slices returned.
    """
    for dim, step in (("y", tile_px), ("x", tile_px), ("time", time_step)):
        unit = layout.unit(dim, sizes[dim])
        if step < 1 or (step % unit and step < sizes[dim]):
            raise LayoutError(f"slice size {step} along {dim!r} is not a multiple of the write unit {unit}")
    covered = covered or {}
    out: list[Slice] = []
    for ys in _ranges(sizes["y"], tile_px):
        for xs in _ranges(sizes["x"], tile_px):
            done = covered.get((ys, xs), set())
            for t0, t1 in _ranges(sizes["time"], time_step):
                run_start = None
                for t in range(t0, t1 + 1):
                    todo = t < t1 and t not in done
                    if todo and run_start is None:
                        run_start = t
                    elif not todo and run_start is not None:
                        out.append(Slice((run_start, t), ys, xs))
                        run_start = None
    return out


def covered_times(slice_ids: list[str]) -> dict[tuple[tuple[int, int], tuple[int, int]], set[int]]:
    """Committed time indices per tile, from committed slice ids."""
    out: dict[tuple[tuple[int, int], tuple[int, int]], set[int]] = {}
    for sid in slice_ids:
        s = Slice.from_id(sid)
        out.setdefault(s.tile, set()).update(range(*s.t))
    return out


def drop_superseded(records: Iterable[dict]) -> dict[str, dict]:
    """Slice records by id, given newest first, without those a newer record overlaps.

    A slice is written again over committed ones when items published late for dates the store
    holds meet it, or when its reads failed; the newer record then stands for those cells, and
    an older one it overlaps (even in part: its remaining cells are planned again) no longer counts.
    """
    kept: dict[str, dict] = {}
    boxes: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple[int, int]]] = {}
    for record in records:
        if record["slice"] in kept:
            continue
        if not all(k in record for k in ("t", "y", "x")):  # a record without its region overlaps nothing known
            kept[record["slice"]] = record
            continue
        (t0, t1), y, x = record["t"], tuple(record["y"]), tuple(record["x"])
        overlapped = any(
            ky[0] < y[1] and y[0] < ky[1] and kx[0] < x[1] and x[0] < kx[1] and any(a < t1 and t0 < b for a, b in spans)
            for (ky, kx), spans in boxes.items()
        )
        if not overlapped:
            kept[record["slice"]] = record
            boxes.setdefault((y, x), []).append((t0, t1))
    return kept


@dataclass(frozen=True)
class TimeMerge:
    """A store's time axis with time steps inserted.

    ``times``: the merged axis (datetime64, sorted); ``old_to_new``: the new index of each
    old time step (int64, ``len == n_old``, strictly increasing); ``inserted``: the new
    index of each inserted time step, in the order they were given.
    """

    times: np.ndarray
    old_to_new: np.ndarray
    inserted: np.ndarray


def merge_time_axes(old: np.ndarray, added: np.ndarray) -> TimeMerge:
    """Merge the time steps ``added`` into the sorted axis ``old`` (both datetime64).

    Raises ``ValueError`` if ``old`` is not sorted or a time occurs twice: time steps the
    store already holds must be left out of ``added`` by the caller.
    """
    old, added = np.asarray(old), np.asarray(added)
    if len(old) > 1 and not (old[1:] > old[:-1]).all():
        raise ValueError("the store's time axis is not strictly increasing")
    both = np.concatenate([old, added])
    order = np.argsort(both, kind="stable")
    merged = both[order]
    if len(merged) > 1 and not (merged[1:] > merged[:-1]).all():
        raise ValueError("inserted time steps repeat a time step (of the store or of each other)")
    position = np.empty(len(both), np.int64)
    position[order] = np.arange(len(both))
    return TimeMerge(merged, position[: len(old)], position[len(old) :])


def index_runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Positions ``[a, b)`` of the runs of consecutive integers in ``indices`` (in order)."""
    runs, start = [], 0
    for i in range(1, len(indices) + 1):
        if i == len(indices) or indices[i] != indices[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs if len(indices) else []


@dataclass(frozen=True)
class TimeMove:
    """Old time indices ``old`` (``[a, b)``) go to ``new`` (same length). ``whole``: ``old`` is one
    whole stored chunk (or shard) along time that becomes one whole stored chunk of the new
    axis, so its stored objects can be moved as they are (hard link, byte copy); otherwise
    the data is read and rewritten through Zarr."""

    old: tuple[int, int]
    new: tuple[int, int]
    whole: bool


def plan_time_moves(old_to_new: Sequence[int] | np.ndarray, unit: int, n_new: int) -> list[TimeMove]:
    """The moves of a time remap, per stored chunk of ``unit`` time steps (chunk or shard size).

    Old chunks whose time steps stay contiguous and land exactly on a new chunk are
    ``whole`` (with time chunks of 1, every move); the others are split into the runs of
    consecutive new indices. Moves come in increasing old order; as new indices never
    fall below old ones, applying them in *reverse* order moves data within one array
    without overwriting data not yet moved.
    """
    if unit < 1:
        raise ValueError(f"unit must be >= 1, got {unit}")
    old_to_new = [int(i) for i in old_to_new]
    moves = []
    for a in range(0, len(old_to_new), unit):
        b = min(a + unit, len(old_to_new))
        runs = index_runs(old_to_new[a:b])
        if len(runs) == 1:
            c = old_to_new[a]
            moves.append(TimeMove((a, b), (c, c + b - a), c % unit == 0 and min(c + unit, n_new) - c == b - a))
        else:
            moves += [
                TimeMove((a + r0, a + r1), (old_to_new[a + r0], old_to_new[a + r0] + r1 - r0), False) for r0, r1 in runs
            ]
    return moves


def remap_slice_record(record: Mapping, old_to_new: Sequence[int] | np.ndarray) -> list[dict]:
    """The records of one committed slice after time steps were inserted (``old_to_new``).

    A slice whose time steps stay contiguous keeps one record, with its range shifted
    (and its id, :attr:`Slice.id`, renamed); one split by inserted steps becomes one record
    per contiguous run, each with its share of ``bytes``. Renamed records keep the first id
    in ``remapped_from``. The pieces of a split record keep its ``sources`` and its
    ``time_range`` (the caller sets ranges from the merged axis, see
    :func:`with_time_range`); the union of the records' sources, the store's provenance,
    stays exact.
    """
    t0, t1 = record["t"]
    new = [int(i) for i in old_to_new[t0:t1]]
    runs = index_runs(new)
    out = []
    for r0, r1 in runs:
        t = (new[r0], new[r0] + r1 - r0)
        (y0, y1), (x0, x1) = record["y"], record["x"]
        sid = Slice(t, (int(y0), int(y1)), (int(x0), int(x1))).id
        piece = {**record, "slice": sid, "t": list(t)}
        if len(runs) > 1 and "bytes" in record:
            piece["bytes"] = int(record["bytes"]) * (r1 - r0) // (t1 - t0)
        if sid != record["slice"]:
            piece.setdefault("remapped_from", record["slice"])
        out.append(piece)
    return out


def with_time_range(record: dict, times: np.ndarray) -> dict:
    """``record`` with ``time_range`` (first and last time, ISO seconds) read from the axis ``times``."""
    t0, t1 = record["t"]
    return {**record, "time_range": [str(np.datetime_as_string(times[t], "s")) for t in (t0, t1 - 1)]}
