"""Store engines that commit one slice at a time: plain Zarr with a manifest, or Icechunk.

Both engines expose the same operations: create the store skeleton (metadata and
coordinates, no data) atomically, append time steps, insert time steps anywhere in the
time axis (items published late, for dates the store lacks), write one slice (a region
of the ``(time, y, x)`` data variables) and commit it, list the committed slices, and
update the root attributes.

* :class:`ZarrEngine`: region writes into a plain Zarr v3 store; after a slice's chunks
  are on disk its record is written to ``<store>/eocube-manifest/<slice id>.json``
  (temp file + rename, so a record exists only for a complete slice). A killed run
  leaves at most orphan chunks of an uncommitted slice, which the re-run overwrites.
  Inserting time steps shifts later data, so :meth:`ZarrEngine.insert_times` builds the
  new store beside the old one and swaps the two atomically (see there).
* :class:`IcechunkEngine`: every slice is one Icechunk commit (data and record
  together, the record in the commit metadata). Concurrent commits of disjoint slices
  are rebased; a conflicting one fails with :class:`ConflictingWriteError` unless the
  other writer committed the same slice, in which case it is skipped. Commits on a
  local file system are serialised by a file lock (Icechunk cannot arbitrate them
  there). The slice is computed on the active Dask scheduler and then written from
  this process: ``icechunk.xarray.to_icechunk`` of icechunk 1.1.21 passes a
  ``synchronizer`` argument that xarray 2026.9 no longer accepts. Inserting time steps
  is one commit that moves the data and records the time remap in its metadata;
  :meth:`IcechunkEngine.committed` applies it to the records of earlier slices.

The provenance of a store written by a backfill is the union of the ``sources`` of its
committed slice records (:func:`store_sources`): exactly the items whose pixels are in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import dask
import numpy as np
import xarray as xr
import zarr
from zarr.core.metadata import ArrayV3Metadata

from pipeline.store.cf import vlen_text_coords
from pipeline.store.journal import commit_lock
from pipeline.store.layout import (
    TimeMerge,
    TimeMove,
    drop_superseded,
    index_runs,
    merge_time_axes,
    plan_time_moves,
    remap_slice_record,
    with_time_range,
)
from pipeline.store.paths import is_eocube_repository, is_icechunk_repository, swap_into_place
from pipeline.store.zarr_store import StoreError, consolidate

if TYPE_CHECKING:
    from dask.delayed import Delayed

MANIFEST_DIR = "eocube-manifest"
#: unit records (one per tile made in every derived product), under the manifest
UNITS_DIR = "units"
#: the group holding the cube; the derived products are its siblings, the root holds the store's provenance
CUBE = "cube"
ENGINES = ("zarr", "icechunk")


class ConflictingWriteError(StoreError):
    """Another writer committed overlapping data first."""


class Engine(Protocol):
    """What the backfill needs from a store engine."""

    path: Path
    kind: str

    def exists(self) -> bool: ...
    def open(self) -> xr.Dataset: ...
    def create(self, template: xr.Dataset, encoding: dict) -> None: ...
    def append_times(self, template: xr.Dataset) -> None: ...
    def insert_times(self, template: xr.Dataset) -> None: ...
    def recover(self) -> list[Path]: ...
    def write_slice(
        self, part: xr.Dataset, region: dict[str, slice], record: dict, finish: Callable[[dict], dict] | None = None
    ) -> bool: ...
    def committed(self) -> dict[str, dict]: ...
    def update_attrs(self, attrs: dict) -> None: ...
    def open_group(self, name: str) -> xr.Dataset | None: ...
    def create_group(self, name: str, template: xr.Dataset, encoding: dict) -> None: ...
    def update_group_attrs(self, name: str, attrs: dict) -> None: ...
    def drop_groups(self, names: Iterable[str]) -> None: ...
    def write_unit(self, parts: list[tuple[str, xr.Dataset, dict[str, slice]]], record: dict) -> None: ...
    def units(self) -> dict[str, dict]: ...


def _atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def _append_times(store, template: xr.Dataset) -> None:
    """Append ``template``'s time-dependent variables to the cube group of the Zarr ``store`` (metadata
    and coordinates only), keeping the group's own attributes, which xarray rewrites."""
    group = zarr.open_group(store, path=CUBE, mode="r+", zarr_format=3)
    attrs = group.attrs.asdict()
    part = template[[v for v in template.variables if "time" in template[v].dims]]
    part.attrs = {}
    part.to_zarr(store, group=CUBE, mode="a", append_dim="time", consolidated=False, compute=False)
    group = zarr.open_group(store, path=CUBE, mode="r+", zarr_format=3)
    group.attrs.clear()
    group.attrs.update(attrs)


def _labels_in_memory(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` with its non-spatial coordinates (labels along time, such as ``sensor``) read now, in this
    process: small, and read often (``.values`` of a lazy one is a round trip to the Dask cluster)."""
    labels = [c for c in cube.coords if c not in cube.indexes and not {"y", "x"} & set(cube[c].dims)]
    return cube.assign_coords({c: cube[c].compute(scheduler="synchronous") for c in labels})


def _with_store_attrs(cube: xr.Dataset, root: zarr.Group) -> xr.Dataset:
    """The cube group's dataset with the store's root attributes (provenance, failures) over its own."""
    return cube.assign_attrs(root.attrs.asdict())


def _create_cube(store, template: xr.Dataset, encoding: dict) -> None:
    """The cube group's skeleton (metadata and coordinates) in ``store``, the template's attributes also at the root."""
    template.to_zarr(store, group=CUBE, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=encoding)
    zarr.open_group(store, mode="r+", zarr_format=3).attrs.update(template.attrs)


def committed_sources(records: Iterable[Mapping]) -> dict[str, list[str]]:
    """The union of the slice records' ``sources`` (item ids per sensor), sensors and ids sorted."""
    out: dict[str, set[str]] = {}
    for record in records:
        for sensor, ids in (record.get("sources") or {}).items():
            out.setdefault(sensor, set()).update(ids)
    return {sensor: sorted(ids) for sensor, ids in sorted(out.items())}


def store_sources(engine: Engine) -> dict[str, list[str]]:
    """The items whose pixels are in the store, per sensor.

    For a store written by a backfill: the union of its committed slice records' sources
    (a found item whose time steps are not committed yet is not listed). For a store
    written in one shot (:func:`~pipeline.store.zarr_store.write_store`, no records): its
    ``eocube:source_items`` attribute as written.
    """
    if engine.exists():
        return committed_sources(engine.committed().values())
    return json.loads(engine.open().attrs.get("eocube:source_items", "{}"))


# --- moving data along time (inserting time steps) -------------------------------------------------------------


def _dims(arr: zarr.Array) -> list[str]:
    """The dimension names of ``arr`` (Zarr v3 metadata; a v2 array has none)."""
    meta = arr.metadata
    return [str(n) for n in (meta.dimension_names or ())] if isinstance(meta, ArrayV3Metadata) else []


def _stored_shape(arr: zarr.Array) -> tuple[int, ...]:
    """The shape of one stored object of ``arr``: its shard if sharded, else its chunk."""
    return arr.shards or arr.chunks


def _array(group: zarr.Group, path: str) -> zarr.Array:
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path} is a group, not an array")
    return node


def _time_arrays(group: zarr.Group) -> list[tuple[str, zarr.Array]]:
    """``(path, array)`` of every array under ``group`` with a ``time`` dimension."""
    return [
        (name, node)
        for name, node in group.members(max_depth=None)
        if isinstance(node, zarr.Array) and "time" in _dims(node)
    ]


def _time_axis(arr: zarr.Array) -> int:
    return _dims(arr).index("time")


def _time_unit(arr: zarr.Array) -> int:
    """Time steps per stored object (the shard size if sharded, else the chunk size)."""
    return int(_stored_shape(arr)[_time_axis(arr)])


def _other_blocks(arr: zarr.Array) -> Iterator[list[slice]]:
    """Selections of each stored chunk (or shard) along the dimensions other than time; the time
    entry is ``slice(None)``, for the caller to set. One block bounds the memory of a copy."""
    axis, shape = _time_axis(arr), arr.shape
    unit = _stored_shape(arr)
    grid = [range(0, shape[d], unit[d]) if d != axis else range(1) for d in range(arr.ndim)]
    for starts in np.ndindex(*[len(g) for g in grid]):
        yield [slice(None) if d == axis else slice(grid[d][i], grid[d][i] + unit[d]) for d, i in enumerate(starts)]


def _copy_time_range(src: zarr.Array, dst: zarr.Array, move: TimeMove) -> None:
    """Copy time steps ``move.old`` of ``src`` to ``move.new`` of ``dst`` through Zarr (decode,
    encode), one stored block at a time; ``src`` may be ``dst`` (each block is read first)."""
    axis = _time_axis(src)
    for block in _other_blocks(src):
        old, new = list(block), list(block)
        old[axis], new[axis] = slice(*move.old), slice(*move.new)
        dst[tuple(new)] = src[tuple(old)]


def _clear_time_steps(arr: zarr.Array, steps: np.ndarray) -> None:
    """Set the time steps ``steps`` (indices) of ``arr`` to its fill value (empty chunks are dropped)."""
    axis = _time_axis(arr)
    order = np.sort(np.asarray(steps, np.int64))
    for r0, r1 in index_runs(list(order)):
        for block in _other_blocks(arr):
            block[axis] = slice(int(order[r0]), int(order[r1 - 1]) + 1)
            shape = [len(range(*b.indices(n))) for b, n in zip(block, arr.shape, strict=True)]
            arr[tuple(block)] = np.full(shape, arr.fill_value, dtype=arr.dtype)


def _from_template(name: str, arr: zarr.Array, template: xr.Dataset) -> bool:
    """True for the arrays whose inserted time steps come from the template (the coordinates along
    time: ``time``, ``sensor``, ``cloud_cover``, ...), False for the slice-written data variables."""
    dims = set(_dims(arr))
    return name in template.variables and not {"time", "y", "x"} <= dims


def _write_template_steps(arr: zarr.Array, var: xr.DataArray, like: xr.DataArray, inserted: np.ndarray) -> None:
    """Write the template variable ``var`` (decoded, its time steps in order) at the time indices
    ``inserted`` of ``arr``, encoded as the store encodes the same variable ``like`` (CF time units...)."""
    dims = _dims(arr)
    variable = xr.Variable(dims, var.transpose(*dims).values, encoding=dict(like.encoding))
    encoded = xr.conventions.encode_cf_variable(variable, name=str(var.name))
    selection: list[slice | np.ndarray] = [slice(None)] * arr.ndim
    selection[dims.index("time")] = np.asarray(inserted, np.int64)
    arr.set_orthogonal_selection(tuple(selection), np.asarray(encoded.values).astype(arr.dtype, copy=False))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (no data copied), or copy it where links fail (other file system)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path, skip: str | None = "zarr.json") -> None:
    """Hard-link (or copy) every file under ``src`` to the same place under ``dst``, except ``src/skip``."""
    for folder, _, files in os.walk(src):
        for f in files:
            path = Path(folder) / f
            if skip is None or path != src / skip:
                _link_or_copy(path, dst / path.relative_to(src))


def _link_whole_chunks(arr: zarr.Array, src: Path, dst: Path, move: TimeMove) -> None:
    """Hard-link the stored objects of one whole time chunk (``move.old``) of the array ``arr`` (files
    under ``src``) to their keys at ``move.new`` under ``dst``; absent (empty) chunks stay absent."""
    axis, unit = _time_axis(arr), _time_unit(arr)
    grid = [-(-n // c) for n, c in zip(arr.shape, _stored_shape(arr), strict=True)]
    grid[axis] = 1
    for coords in np.ndindex(*grid):
        old, new = list(coords), list(coords)
        old[axis], new[axis] = move.old[0] // unit, move.new[0] // unit
        source = src / arr.metadata.encode_chunk_key(tuple(old))
        if source.exists():
            _link_or_copy(source, dst / arr.metadata.encode_chunk_key(tuple(new)))


def leftover_pattern(path: Path) -> re.Pattern:
    """Names of the hidden siblings an interrupted insert leaves beside ``path``."""
    return re.compile(rf"\.{re.escape(path.name)}\.(insert|old)-[0-9a-f]{{8,32}}")


def leftovers(path: Path) -> list[Path]:
    """The hidden folders beside ``path`` named as an insert names them (``.<name>.insert-<hex>``, ``.<name>.old-<hex>``)."""
    pattern = leftover_pattern(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def _holds_store_or_less(folder: Path) -> bool:
    """True if ``folder`` holds a Zarr engine store, or nothing but (some of) its markers ``zarr.json`` and the
    manifest folder: what :func:`remove_hidden_store` leaves last, and what an insert creates first."""
    return ZarrEngine(folder).exists() or set(os.listdir(folder)) <= {"zarr.json", MANIFEST_DIR}


def remove_hidden_store(folder: Path) -> None:
    """Remove a hidden store folder, its markers (``zarr.json``, the manifest) last, so that a kill
    midway leaves a folder :meth:`ZarrEngine.recover` still recognises and removes."""
    if not folder.is_dir():
        return
    markers = {"zarr.json", MANIFEST_DIR}
    for child in folder.iterdir():
        if child.name in markers:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.rmtree(folder / MANIFEST_DIR, ignore_errors=True)
    (folder / "zarr.json").unlink(missing_ok=True)
    folder.rmdir()


class ZarrEngine:
    """Plain Zarr v3 store with a completion manifest (one JSON record per committed slice)."""

    kind = "zarr"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_DIR

    def exists(self) -> bool:
        return (self.path / CUBE / "zarr.json").exists() and self.manifest.is_dir()

    def open(self) -> xr.Dataset:
        cube = _labels_in_memory(xr.open_zarr(self.path, group=CUBE, consolidated=False))
        return _with_store_attrs(cube, zarr.open_group(str(self.path), mode="r", zarr_format=3, use_consolidated=False))

    def create(self, template: xr.Dataset, encoding: dict) -> None:
        """Write metadata and coordinates under a temporary name, then rename into place."""
        if self.path.exists():
            raise StoreError(
                f"{self.path} exists but was not written by a backfill (no {MANIFEST_DIR}/); pass "
                "--overwrite (overwrite=True) to replace it with one"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            _create_cube(str(tmp), template, encoding)
            (tmp / MANIFEST_DIR).mkdir()
            consolidate(tmp)
            tmp.rename(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def append_times(self, template: xr.Dataset) -> None:
        """Extend every time-dependent array by ``template``'s time steps (coordinates written, data empty)."""
        _append_times(str(self.path), template)
        consolidate(self.path)

    def insert_times(self, template: xr.Dataset) -> None:
        """Insert ``template``'s time steps (times the store lacks, anywhere) into the time axis, in order.

        Later time steps move to higher indices, so the new store is built in a hidden
        sibling ``.<name>.insert-<uuid>``: the metadata with the merged time axis, the
        coordinates along time (``time``, ``sensor``, ``cloud_cover``, ... ; the inserted steps
        from ``template``), the existing data at its new time indices, the slice records with
        remapped time ranges (:func:`~pipeline.store.layout.remap_slice_record`), consolidated
        metadata. Chunk files are hard-linked (copied where links fail) wherever a whole
        stored chunk (or shard) along time becomes a whole new one (always with time
        chunks of 1), otherwise read and rewritten through Zarr. Arrays without a time
        dimension are linked as they are. The inserted time steps hold no data (their
        slices are still to write). zarr-python writes every object to a temporary file
        renamed into place, so a later write never changes a file the two stores share.

        Then the two folders are swapped atomically (:func:`swap_into_place`) and the old
        one removed. A kill at any point leaves the old store at ``path`` (before the
        swap) or the new complete one (after): never a mixture. The hidden folder it
        leaves (the partial new store, or the old one) is removed by the next run's
        :meth:`recover`. Readers that opened the store before the swap must reopen it.
        """
        old = self.open()
        merge = merge_time_axes(old.time.values, template.time.values)
        tmp = self.path.with_name(f".{self.path.name}.insert-{uuid.uuid4().hex}")
        try:
            self._build_inserted(tmp, old, template, merge)
            leftover = swap_into_place(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                remove_hidden_store(tmp)
            raise
        with contextlib.suppress(OSError):  # what is left is removed by the next run's recover()
            remove_hidden_store(leftover)

    def _build_inserted(self, dst: Path, old: xr.Dataset, template: xr.Dataset, merge: TimeMerge) -> None:
        """Write the store with ``merge``'s time axis at ``dst`` (see :meth:`insert_times`)."""
        src, n_new = self.path, len(merge.times)
        dst.mkdir()
        root_meta = json.loads((src / "zarr.json").read_text())
        root_meta.pop("consolidated_metadata", None)  # rewritten by consolidate() at the end
        (dst / "zarr.json").write_text(json.dumps(root_meta))
        (dst / MANIFEST_DIR).mkdir()  # from here on, a leftover ``dst`` is recognisably an eocube store
        source = zarr.open_group(str(src), mode="r", zarr_format=3, use_consolidated=False)
        along_time = dict(_time_arrays(source))
        members = dict(source.members(max_depth=None))
        for name, node in members.items():
            meta = json.loads((src / name / "zarr.json").read_text())
            (dst / name).mkdir(parents=True, exist_ok=True)
            if name in along_time:
                meta["shape"][_time_axis(along_time[name])] = n_new
            elif isinstance(node, zarr.Array):
                _link_tree(src / name, dst / name)
            (dst / name / "zarr.json").write_text(json.dumps(meta))
        for other in src.iterdir():  # anything else kept in the store folder goes along as it is
            if other.name in {"zarr.json", MANIFEST_DIR, *(n.split("/")[0] for n in members)}:
                continue
            if other.is_dir():
                _link_tree(other, dst / other.name, skip=None)
            else:
                _link_or_copy(other, dst / other.name)
        target = zarr.open_group(str(dst), mode="r+", zarr_format=3, use_consolidated=False)
        for name, arr in along_time.items():
            for move in plan_time_moves(merge.old_to_new, _time_unit(arr), n_new):
                if move.whole:
                    _link_whole_chunks(arr, src / name, dst / name, move)
                else:
                    _copy_time_range(arr, _array(target, name), move)
            variable = name.rsplit("/", 1)[-1]  # arrays of the cube group: "cube/time", "cube/red", ...
            if _from_template(variable, arr, template):
                _write_template_steps(_array(target, name), template[variable], old[variable], merge.inserted)
        for record in self.committed().values():
            for piece in remap_slice_record(record, merge.old_to_new):
                _atomic_write_json(dst / MANIFEST_DIR / f"{piece['slice']}.json", with_time_range(piece, merge.times))
        consolidate(dst)

    def recover(self) -> list[Path]:
        """Clean up after an insert that was killed; returns the hidden folders removed or restored.

        Only folders named as :meth:`insert_times` names them (``.<name>.insert-<hex>``,
        ``.<name>.old-<hex>``) that hold an eocube store (or only its markers, or nothing) are touched. Where the
        store itself is missing (killed between the two renames of the fallback swap), the
        old store is renamed back to ``path`` first. Call it holding the writer lock.
        """
        ours, done = leftovers(self.path), []
        if not self.path.exists():
            olds = sorted(
                (p for p in ours if ".old-" in p.name and ZarrEngine(p).exists()), key=lambda p: p.stat().st_mtime
            )
            if olds:
                olds[-1].rename(self.path)
                ours.remove(olds[-1])
                done.append(olds[-1])
        for p in ours:
            if _holds_store_or_less(p):
                remove_hidden_store(p)
                done.append(p)
        return done

    def write_slice(
        self, part: xr.Dataset, region: dict[str, slice], record: dict, finish: Callable[[dict], dict] | None = None
    ) -> bool:
        """Write one slice, then its record (``finish(record)`` once the data is written, if given:
        what was learnt while computing it). A slice may start inside a time chunk (a step inserted
        next to committed ones): one task then rewrites that chunk, which xarray's ``safe_chunks``
        refuses; :func:`~pipeline.store.layout.plan_slices` (no two slices share a chunk or shard) and
        :func:`~pipeline.store.layout.check_alignment` (one task per chunk) already make it safe."""
        self.slice_writes(part, region).compute()
        self.commit_slice(finish(record) if finish else record)
        return True

    def slice_writes(self, part: xr.Dataset, region: dict[str, slice]) -> Delayed:
        """The writes of one slice's chunks, to compute (``part`` aligned to the store's chunks)."""
        return part.to_zarr(
            self.path, group=CUBE, region=region, mode="r+", consolidated=False, safe_chunks=False, compute=False
        )

    def commit_slice(self, record: dict) -> None:
        """Commit a slice whose chunks are written: its record."""
        _atomic_write_json(self.manifest / f"{record['slice']}.json", record)

    def committed(self) -> dict[str, dict]:
        """The committed slice records by slice id (a record a newer one overlaps drops out:
        :func:`~pipeline.store.layout.drop_superseded`; newest by the record file's write time)."""
        if not self.manifest.is_dir():
            return {}
        files = sorted(self.manifest.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        kept = drop_superseded(json.loads(p.read_text()) for p in files)
        return dict(sorted(kept.items()))

    def update_attrs(self, attrs: dict) -> None:
        zarr.open_group(str(self.path), mode="r+", zarr_format=3).attrs.update(attrs)
        consolidate(self.path)

    @property
    def unit_records(self) -> Path:
        return self.manifest / UNITS_DIR

    def open_group(self, name: str) -> xr.Dataset | None:
        """The product group ``name`` (a child group of the store), or None if there is none."""
        if not (self.path / name / "zarr.json").is_file():
            return None
        return xr.open_zarr(self.path, group=name, consolidated=False)

    def create_group(self, name: str, template: xr.Dataset, encoding: dict) -> None:
        """(Re)create the product group ``name`` from ``template`` (metadata and coordinates, no data)."""
        shutil.rmtree(self.path / name, ignore_errors=True)
        vlen_text_coords(template).to_zarr(
            self.path, group=name, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding
        )
        consolidate(self.path)

    def drop_groups(self, names: Iterable[str]) -> None:
        """Remove product groups and every unit record (their units are all to be made again)."""
        for name in names:
            shutil.rmtree(self.path / name, ignore_errors=True)
        shutil.rmtree(self.unit_records, ignore_errors=True)
        consolidate(self.path)

    def update_group_attrs(self, name: str, attrs: dict) -> None:
        zarr.open_group(str(self.path), path=name, mode="r+", zarr_format=3).attrs.update(attrs)
        consolidate(self.path)

    def write_unit(self, parts: list[tuple[str, xr.Dataset, dict[str, slice]]], record: dict) -> None:
        """Write one unit's regions of every product group, then its record (so a record exists only for a
        unit complete in every product; a killed unit is written again by the next run). The groups' chunks
        are computed and written as one Dask computation, so no group waits for another's last chunk."""
        writes = [
            part.to_zarr(self.path, group=group, region=region, mode="r+", consolidated=False, compute=False)
            for group, part, region in parts
        ]
        dask.compute(*writes)
        self.unit_records.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(self.unit_records / f"{record['unit']}.json", record)

    def units(self) -> dict[str, dict]:
        if not self.unit_records.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.unit_records.glob("*.json"))}


class IcechunkEngine:
    """An Icechunk repository on the local file system; one commit per slice on branch ``main``."""

    kind = "icechunk"
    branch = "main"

    def __init__(self, path: Path | str, max_rebases: int = 20):
        self.path = Path(path)
        self.max_rebases = max_rebases

    def _repo(self, create: bool = False):
        import icechunk

        storage = icechunk.local_filesystem_storage(str(self.path))
        if create:
            return icechunk.Repository.open_or_create(storage)
        if not icechunk.Repository.exists(storage):
            raise StoreError(f"no Icechunk repository at {self.path}")
        return icechunk.Repository.open(storage)

    def exists(self) -> bool:
        return is_eocube_repository(self.path, self.branch)

    def open(self) -> xr.Dataset:
        session = self._repo().readonly_session(branch=self.branch)
        cube = _labels_in_memory(xr.open_zarr(session.store, group=CUBE, consolidated=False))
        return _with_store_attrs(cube, zarr.open_group(session.store, mode="r"))

    def _commit(self, session, message: str, metadata: dict | None = None) -> None:
        import icechunk

        with commit_lock(self.path):
            for _ in range(self.max_rebases):
                try:
                    session.commit(message, metadata=metadata)
                    return
                except icechunk.ConflictError:
                    try:
                        session.rebase(icechunk.ConflictDetector())
                    except icechunk.RebaseFailedError as exc:
                        raise ConflictingWriteError(
                            f"{self.path}: {message!r} conflicts with a concurrent commit: "
                            f"{[str(c) for c in exc.conflicts][:3]}"
                        ) from None
        raise ConflictingWriteError(f"{self.path}: {message!r} still conflicting after {self.max_rebases} rebases")

    def create(self, template: xr.Dataset, encoding: dict) -> None:
        if self.path.exists() and not is_icechunk_repository(self.path):
            raise StoreError(
                f"{self.path} exists but is not an Icechunk repository written by a backfill; pass "
                "--overwrite (overwrite=True) to replace it with one"
            )
        repo = self._repo(create=True)
        session = repo.writable_session(self.branch)
        _create_cube(session.store, template, encoding)
        self._commit(session, "create store skeleton", {"eocube:op": "create"})

    def append_times(self, template: xr.Dataset) -> None:
        session = self._repo().writable_session(self.branch)
        _append_times(session.store, template)
        self._commit(session, f"append {template.sizes['time']} time steps", {"eocube:op": "append"})

    def insert_times(self, template: xr.Dataset) -> None:
        """Insert ``template``'s time steps (times the store lacks, anywhere) into the time axis, in order.

        One writable session and one commit, so atomic by construction: every array along
        time is resized, its data moved to the new time indices in place (last first, so
        nothing is overwritten before it moved; see :func:`~pipeline.store.layout.plan_time_moves`),
        the inserted steps of the coordinates along time written from ``template`` and those
        of the data variables cleared. The commit metadata ``{"eocube:op": "insert",
        "eocube:time_remap": {"old_to_new": [...], "inserted": [...], "n_new": N}}`` lets
        :meth:`committed` remap the records of the slices committed before it.
        """
        old = self.open()
        merge = merge_time_axes(old.time.values, template.time.values)
        session = self._repo().writable_session(self.branch)
        cube = zarr.open_group(session.store, path=CUBE, mode="r+", zarr_format=3)
        n_new = len(merge.times)
        for name, arr in _time_arrays(cube):
            shape = list(arr.shape)
            shape[_time_axis(arr)] = n_new
            arr.resize(tuple(shape))
            for move in reversed(plan_time_moves(merge.old_to_new, _time_unit(arr), n_new)):
                if move.old != move.new:
                    _copy_time_range(arr, arr, move)
            if _from_template(name, arr, template):
                _write_template_steps(arr, template[name], old[name], merge.inserted)
            else:
                _clear_time_steps(arr, merge.inserted)
        remap = {"old_to_new": merge.old_to_new.tolist(), "inserted": merge.inserted.tolist(), "n_new": n_new}
        self._commit(
            session, f"insert {len(merge.inserted)} time steps", {"eocube:op": "insert", "eocube:time_remap": remap}
        )

    def recover(self) -> list[Path]:
        """Nothing to clean up: an interrupted insert is an uncommitted session."""
        return []

    def write_slice(
        self, part: xr.Dataset, region: dict[str, slice], record: dict, finish: Callable[[dict], dict] | None = None
    ) -> bool:
        """Write and commit one slice (its record through ``finish`` once computed, if given); False if a
        concurrent writer committed the same slice first."""
        data = part.load()  # computed before the session opens, so the commit rarely needs a rebase
        record = finish(record) if finish else record
        session = self._repo().writable_session(self.branch)
        data.to_zarr(session.store, group=CUBE, region=region, mode="r+", consolidated=False)
        try:
            self._commit(session, f"slice {record['slice']}", {"eocube:slice": record})
        except ConflictingWriteError:
            if record["slice"] in self.committed():
                return False
            raise
        return True

    def committed(self) -> dict[str, dict]:
        """The committed slice records by slice id, newest commit first, in the current time indices.

        A record committed before an insert (``eocube:op`` ``insert``) is remapped through
        every later insert, oldest first (:func:`~pipeline.store.layout.remap_slice_record`);
        remapped records take their ``time_range`` from the current time axis.
        """
        repo = self._repo()
        out_pieces: list[dict] = []  # newest first
        remaps: list[list[int]] = []  # old_to_new of the inserts newer than the snapshot being read, newest first
        for snap in repo.ancestry(branch=self.branch):
            metadata = snap.metadata or {}
            if metadata.get("eocube:op") == "insert":
                remaps.append(metadata["eocube:time_remap"]["old_to_new"])
                continue
            record = metadata.get("eocube:slice")
            if record:
                pieces = [{**record, "snapshot": snap.id}]
                for old_to_new in reversed(remaps):
                    pieces = [q for p in pieces for q in remap_slice_record(p, old_to_new)]
                out_pieces.extend(pieces)
        out = drop_superseded(out_pieces)
        if any("remapped_from" in r for r in out.values()):
            times = self.open().time.values
            out = {k: with_time_range(r, times) if "remapped_from" in r else r for k, r in out.items()}
        return out

    def open_group(self, name: str) -> xr.Dataset | None:
        session = self._repo().readonly_session(branch=self.branch)
        if name not in zarr.open_group(session.store, mode="r"):
            return None
        return xr.open_zarr(session.store, group=name, consolidated=False)

    def create_group(self, name: str, template: xr.Dataset, encoding: dict) -> None:
        session = self._repo().writable_session(self.branch)
        vlen_text_coords(template).to_zarr(
            session.store, group=name, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding
        )
        self._commit(session, f"create product {name}", {"eocube:op": "create-product", "eocube:product": name})

    def drop_groups(self, names: Iterable[str]) -> None:
        """Remove product groups; every unit committed before is void (one commit)."""
        session = self._repo().writable_session(self.branch)
        root = zarr.open_group(session.store, mode="r+")
        present = [name for name in names if name in root]
        if not present:
            return
        for name in present:
            del root[name]
        self._commit(session, "drop products", {"eocube:op": "drop-products"})

    def update_group_attrs(self, name: str, attrs: dict) -> None:
        session = self._repo().writable_session(self.branch)
        group = zarr.open_group(session.store, path=name, mode="r+")
        if all(group.attrs.get(k) == v for k, v in attrs.items()):
            return
        group.attrs.update(attrs)
        self._commit(session, f"update attributes of {name}", {"eocube:op": "attrs"})

    def write_unit(self, parts: list[tuple[str, xr.Dataset, dict[str, slice]]], record: dict) -> None:
        """Write one unit's regions of every product group and its record in one commit: all or nothing."""
        loaded = dask.compute(*(part for _, part, _ in parts))  # every group's chunks in one computation
        data = [(group, part, region) for (group, _, region), part in zip(parts, loaded, strict=True)]
        session = self._repo().writable_session(self.branch)
        for group, part, region in data:
            part.to_zarr(session.store, group=group, region=region, mode="r+", consolidated=False)
        self._commit(session, f"unit {record['unit']}", {"eocube:unit": record})

    def units(self) -> dict[str, dict]:
        """The unit records committed since the product groups were last dropped, newest first per unit."""
        out: dict[str, dict] = {}
        for snap in self._repo().ancestry(branch=self.branch):
            metadata = snap.metadata or {}
            if metadata.get("eocube:op") == "drop-products":
                break
            record = metadata.get("eocube:unit")
            if record:
                out.setdefault(record["unit"], record)
        return out

    def update_attrs(self, attrs: dict) -> None:
        """Set root attributes in one commit (none if they already hold these values: Icechunk refuses empty commits)."""
        session = self._repo().writable_session(self.branch)
        root = zarr.open_group(session.store, mode="r+")
        if all(root.attrs.get(k) == v for k, v in attrs.items()):
            return
        root.attrs.update(attrs)
        self._commit(session, "update attributes", {"eocube:op": "attrs"})


def open_engine(path: Path | str, kind: str | None = None) -> Engine:
    """The engine for ``path``: ``kind`` if given, else Icechunk when ``path`` holds a repository."""
    path = Path(path)
    if kind is None:
        kind = "icechunk" if (path / "refs").is_dir() and (path / "snapshots").is_dir() else "zarr"
    if kind == "zarr":
        return ZarrEngine(path)
    if kind == "icechunk":
        return IcechunkEngine(path)
    raise ValueError(f"unknown store engine {kind!r}; choose one of {ENGINES}")
