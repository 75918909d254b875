"""Store engines that commit one slice at a time: plain Zarr with a manifest, or Icechunk.

Both engines expose the same operations: create the store skeleton (metadata and
coordinates, no data) atomically, append time steps, write one slice (a region of the
``(time, y, x)`` data variables) and commit it, list the committed slices, and update the
root attributes.

* :class:`ZarrEngine`: region writes into a plain Zarr v3 store; after a slice's chunks
  are on disk its record is written to ``<store>/eocube-manifest/<slice id>.json``
  (temp file + rename, so a record exists only for a complete slice). A killed run
  leaves at most orphan chunks of an uncommitted slice, which the re-run overwrites.
* :class:`IcechunkEngine`: every slice is one Icechunk commit (data and record
  together, the record in the commit metadata). Concurrent commits of disjoint slices
  are rebased; a conflicting one fails with :class:`ConflictingWriteError` unless the
  other writer committed the same slice, in which case it is skipped. Commits on a
  local file system are serialised by a file lock (Icechunk cannot arbitrate them
  there). The slice is computed on the active Dask scheduler and then written from
  this process: ``icechunk.xarray.to_icechunk`` of icechunk 1.1.21 passes a
  ``synchronizer`` argument that xarray 2026.9 no longer accepts.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol

import xarray as xr
import zarr

from pipeline.store.journal import commit_lock
from pipeline.store.zarr_store import StoreError, consolidate

MANIFEST_DIR = "eocube-manifest"
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
    def write_slice(self, part: xr.Dataset, region: dict[str, slice], record: dict) -> bool: ...
    def committed(self) -> dict[str, dict]: ...
    def update_attrs(self, attrs: dict) -> None: ...


def _atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def _append_times(store, template: xr.Dataset) -> None:
    """Append ``template``'s time-dependent variables to the Zarr ``store`` (metadata and
    coordinates only), keeping the store's own root attributes, which xarray rewrites."""
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    attrs = root.attrs.asdict()
    part = template[[v for v in template.variables if "time" in template[v].dims]]
    part.attrs = {}
    part.to_zarr(store, mode="a", append_dim="time", consolidated=False, compute=False)
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    root.attrs.clear()
    root.attrs.update(attrs)


class ZarrEngine:
    """Plain Zarr v3 store with a completion manifest (one JSON record per committed slice)."""

    kind = "zarr"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_DIR

    def exists(self) -> bool:
        return (self.path / "zarr.json").exists() and self.manifest.is_dir()

    def open(self) -> xr.Dataset:
        return xr.open_zarr(self.path, consolidated=False)

    def create(self, template: xr.Dataset, encoding: dict) -> None:
        """Write metadata and coordinates under a temporary name, then rename into place."""
        if self.path.exists():
            raise StoreError(f"{self.path} exists but is not an eocube store (no {MANIFEST_DIR}/); refusing to overwrite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            template.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=encoding)
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

    def write_slice(self, part: xr.Dataset, region: dict[str, slice], record: dict) -> bool:
        part.to_zarr(self.path, region=region, mode="r+", consolidated=False)
        _atomic_write_json(self.manifest / f"{record['slice']}.json", record)
        return True

    def committed(self) -> dict[str, dict]:
        if not self.manifest.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.manifest.glob("*.json"))}

    def update_attrs(self, attrs: dict) -> None:
        zarr.open_group(str(self.path), mode="r+", zarr_format=3).attrs.update(attrs)
        consolidate(self.path)


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
        import icechunk

        if not (self.path / "refs").is_dir() or not icechunk.Repository.exists(icechunk.local_filesystem_storage(str(self.path))):
            return False
        return any((snap.metadata or {}).get("eocube:op") == "create" for snap in self._repo().ancestry(branch=self.branch))

    def open(self) -> xr.Dataset:
        session = self._repo().readonly_session(branch=self.branch)
        return xr.open_zarr(session.store, consolidated=False)

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
                        raise ConflictingWriteError(f"{self.path}: {message!r} conflicts with a concurrent commit: "
                                                    f"{[str(c) for c in exc.conflicts][:3]}") from None
        raise ConflictingWriteError(f"{self.path}: {message!r} still conflicting after {self.max_rebases} rebases")

    def create(self, template: xr.Dataset, encoding: dict) -> None:
        repo = self._repo(create=True)
        session = repo.writable_session(self.branch)
        template.to_zarr(session.store, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=encoding)
        self._commit(session, "create store skeleton", {"eocube:op": "create"})

    def append_times(self, template: xr.Dataset) -> None:
        session = self._repo().writable_session(self.branch)
        _append_times(session.store, template)
        self._commit(session, f"append {template.sizes['time']} time steps", {"eocube:op": "append"})

    def write_slice(self, part: xr.Dataset, region: dict[str, slice], record: dict) -> bool:
        """Write and commit one slice; False if a concurrent writer committed the same slice first."""
        data = part.load()  # computed before the session opens, so the commit rarely needs a rebase
        session = self._repo().writable_session(self.branch)
        data.to_zarr(session.store, region=region, mode="r+", consolidated=False)
        try:
            self._commit(session, f"slice {record['slice']}", {"eocube:slice": record})
        except ConflictingWriteError:
            if record["slice"] in self.committed():
                return False
            raise
        return True

    def committed(self) -> dict[str, dict]:
        repo = self._repo()
        out: dict[str, dict] = {}
        for snap in repo.ancestry(branch=self.branch):
            record = (snap.metadata or {}).get("eocube:slice")
            if record:
                out.setdefault(record["slice"], {**record, "snapshot": snap.id})
        return out

    def update_attrs(self, attrs: dict) -> None:
        session = self._repo().writable_session(self.branch)
        zarr.open_group(session.store, mode="r+").attrs.update(attrs)
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
