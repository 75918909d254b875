"""The operations journal beside a store: locks, failed slices, and runs.

``.<store name>.eocube/`` (a hidden sibling of the store) holds

* ``lock``: an exclusive ``flock`` held by the one backfill/update writing the store;
  a second writer waits up to its timeout and then fails with :class:`StoreLockedError`
  naming the holder, so two writers are serialised or fail cleanly, never interleaved;
* ``commit.lock``: held around each Icechunk commit (local file systems have no
  conditional writes, so Icechunk cannot arbitrate concurrent commits there itself);
* ``failures/<slice id>.json``: the last error of a slice not (yet) committed;
* ``runs.jsonl``: one line per finished run (kind, window, slices planned and written,
  time steps appended and inserted, late items for dates already held, finish time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.redaction import redact
from pipeline.store.zarr_store import StoreError


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


def journal_dir(store: Path | str) -> Path:
    store = Path(store)
    return store.with_name(f".{store.name}.eocube")


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = 0.0, poll_s: float = 0.2, what: str = "store") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; wait up to ``timeout_s`` seconds, then raise.

    The lock file records the holder (host, pid, since) for the error message. The
    kernel releases the lock when the holder dies, so a killed run never blocks the next.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = Path(path).read_text().strip() or "unknown"
                    raise StoreLockedError(
                        f"{what} is locked by another writer ({holder}); waited {timeout_s:g} s"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"host={socket.gethostname()} pid={os.getpid()} since={_now()}".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: what a store's journal folder holds: its locks, the failed slices' records, the runs' lines
JOURNAL_ENTRIES = frozenset({"lock", "commit.lock", "failures", "runs.jsonl"})


def is_journal(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what eocube writes into a store's journal (an absent one does)."""
    if not folder.exists() and not folder.is_symlink():
        return True
    if folder.is_symlink() or not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if entry.name == "failures" and entry.is_dir():
            if not all(f.is_file() and f.name.endswith(".json") or f.name.startswith(".") for f in entry.iterdir()):
                return False
        elif entry.name not in JOURNAL_ENTRIES and not entry.name.startswith((".runs.jsonl.", ".lock")):
            return False
    return True


def write_lock(store: Path | str, timeout_s: float = 0.0):
    """The store's writer lock (see :func:`file_lock`)."""
    return file_lock(journal_dir(store) / "lock", timeout_s, what=f"store {store}")


def commit_lock(store: Path | str):
    """Serialises Icechunk commits of one repository on a local file system (waits up to 10 min)."""
    return file_lock(journal_dir(store) / "commit.lock", timeout_s=600.0, poll_s=0.05, what=f"commits of {store}")


def _atomic_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def record_failure(store: Path | str, slice_id: str, error: BaseException) -> None:
    """Remember why a slice failed (message redacted of signed URLs and tokens)."""
    _atomic_json(
        journal_dir(store) / "failures" / f"{slice_id}.json",
        {"slice": slice_id, "error": type(error).__name__, "message": redact(str(error))[:2000], "at": _now()},
    )


def clear_failure(store: Path | str, slice_id: str) -> None:
    (journal_dir(store) / "failures" / f"{slice_id}.json").unlink(missing_ok=True)


def failures(store: Path | str) -> dict[str, dict]:
    folder = journal_dir(store) / "failures"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def record_run(store: Path | str, run: dict) -> None:
    """Append one finished run to ``runs.jsonl``: ``run`` (kind, start/end, written, planned,
    appended_times, inserted_times, late_items_for_held_dates, engine) plus ``finished``."""
    path = journal_dir(store) / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({**run, "finished": _now()}, default=str) + "\n")


def runs(store: Path | str) -> list[dict]:
    path = journal_dir(store) / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
