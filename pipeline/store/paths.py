"""Output paths: what eocube may write, replace or never touch.

eocube replaces only what it wrote itself: a Zarr v3 store whose root attributes carry
``eocube:version`` (every store the pipeline writes) or ``eocube_compression``, or an
Icechunk repository created by a backfill. Anything else at an output path (a file, a
folder of the user's, an empty folder, a store of another tool) is refused in one line
before any work starts, and an eocube store is replaced only when asked (``overwrite``,
as xarray's ``mode="w"`` against its default ``"w-"``). :func:`check_output` says which, and
whether the path can be written at all (a read-only folder, a full disk).

Replacing a store swaps the new one into place in one step (:func:`swap_into_place`), so the
path always holds a complete store.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from pipeline.redaction import redact

#: Free space (bytes) below which an output folder counts as full before anything is written.
MIN_FREE_BYTES = 64 * 2**20
#: Root attributes that mark a Zarr store as written by eocube.
EOCUBE_MARKERS = ("eocube:version", "eocube_compression")


class OutputPathError(ValueError):
    """An output path eocube must not or cannot write; the message names the path in one line."""


def _zarr_root_attrs(path: Path) -> dict | None:
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("attributes", {}) if doc.get("node_type") == "group" else None


def is_icechunk_repository(path: Path | str) -> bool:
    """Whether ``path`` looks like an Icechunk repository on the local file system."""
    path = Path(path)
    return (path / "refs").is_dir() and (path / "snapshots").is_dir()


def is_eocube_store(path: Path | str) -> bool:
    """Whether ``path`` holds a store eocube wrote (Zarr v3 with its markers, or an eocube Icechunk repository)."""
    path = Path(path)
    if not path.is_dir():
        return False
    attrs = _zarr_root_attrs(path)
    if attrs is not None:
        return any(k in attrs for k in EOCUBE_MARKERS)
    if is_icechunk_repository(path):
        try:
            return is_eocube_repository(path)
        except Exception:  # an unreadable repository is not one of ours to replace
            return False
    return False


def is_eocube_repository(path: Path | str, branch: str = "main") -> bool:
    """Whether ``path`` holds an Icechunk repository whose history starts with an eocube store's creation."""
    import icechunk

    storage = icechunk.local_filesystem_storage(str(path))
    if not (Path(path) / "refs").is_dir() or not icechunk.Repository.exists(storage):
        return False
    repo = icechunk.Repository.open(storage)
    return any((snap.metadata or {}).get("eocube:op") == "create" for snap in repo.ancestry(branch=branch))


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def check_writable(path: Path | str) -> None:
    """Raise :class:`OutputPathError` unless a store can be created at ``path``.

    The nearest existing folder above it must be a folder, writable (a file is created in it
    and removed again, which also catches read-only mounts) and have
    :data:`MIN_FREE_BYTES` free.
    """
    path = Path(path)
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(f"cannot write {path}: {base} is a file, not a folder")
    probe = base / f".eocube-write-check-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc} in {base}") from None
    free = shutil.disk_usage(base).free
    if free < MIN_FREE_BYTES:
        raise OutputPathError(f"cannot write {path}: only {free / 2**20:.0f} MiB free on the disk of {base}")


#: the PNG "Software" text eocube writes into its quicklooks (how it knows them again)
PNG_SOFTWARE = "eocube"


def is_ours_or_free(path: Path | str) -> bool:
    """Whether eocube may write the file ``path`` beside a store: it does not exist, or eocube wrote it
    (a STAC Item or Collection with ``eocube:version``, a PNG whose "Software" text says eocube)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return True
    if not path.is_file():
        return False
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(doc, dict):
            return False
        # Collections written before they carried eocube:version say so in their description
        legacy = doc.get("type") == "Collection" and str(doc.get("description", "")).startswith("eocube store ")
        return legacy or "eocube:version" in doc or "eocube:version" in (doc.get("properties") or {})
    if path.suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as image:
                return str(getattr(image, "text", {}).get("Software", "")).startswith(PNG_SOFTWARE)
        except OSError:
            return False
    return False


def check_beside(paths: list[Path]) -> None:
    """Refuse, in one line, files beside a store that eocube would write over but did not write."""
    for path in paths:
        if not is_ours_or_free(path):
            raise OutputPathError(
                f"{path} exists and was not written by eocube; eocube writes its STAC item and "
                "quicklook there: move it or choose another output path"
            )


def beside(store: Path | str) -> list[Path]:
    """The files eocube writes beside a store: its STAC Item and Collection and its quicklook PNG."""
    store = Path(store)
    stem = store.name.removesuffix(".zarr").removesuffix(".icechunk")
    return [
        store.with_name(f"{stem}.item.json"),
        store.with_name(f"{stem}.collection.json"),
        store.with_suffix(".quicklook.png"),
    ]


def check_not_own_input(source: object, out: Path | str) -> None:
    """Refuse, in one line, an output that is the input store ``source``, inside it, or holding it: writing it
    would replace the data being read (``source`` given as an in-memory dataset is not checked)."""
    if not isinstance(source, (str, Path)):
        return
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise OutputPathError(f"output {out} is the input {source} or overlaps it; write the result elsewhere")


#: the suffix of the hidden sibling a run builds its store in (:func:`partial_path`)
PARTIAL_SUFFIX = ".partial"
#: the longest name the sibling names of a store add to its own (``.NAME.partial.eocube``, ``.NAME.old-<hex>``)
_SIBLING_EXTRA = len("..partial.eocube") + 40
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # two letters at least: "C:/..." is a drive, not a scheme


def partial_path(output: Path | str) -> Path:
    """Where a run builds its store before moving it to ``output``: a hidden sibling, the same for every run
    of that output, so a run killed half-way is resumed (its committed slices and units kept)."""
    output = Path(output)
    return output.with_name(f".{output.name}{PARTIAL_SUFFIX}")


def is_partial(path: Path | str) -> bool:
    """Whether ``path`` is named as a run's hidden partial store (:func:`partial_path`)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1


def check_path_name(path: Path | str) -> None:
    """Refuse, in one line, an output that is not a plain local path eocube can name its siblings after: a URL
    (stores are written to this machine's file systems), control characters, a name too long for the file
    system, or the name of a run's hidden partial store."""
    text = str(path)
    if _URL.match(text):
        raise OutputPathError(
            f"output {redact(text)} is a URL; eocube writes stores to a local or mounted file system path"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise OutputPathError(f"output {text!r} holds control characters (a newline, a tab ...): rename it")
    name = Path(path).name
    if len(os.fsencode(name)) + _SIBLING_EXTRA > 255:
        raise OutputPathError(
            f"output name {name[:40]}... is {len(os.fsencode(name))} bytes long; eocube names files beside the "
            f"store after it, so it must be at most {255 - _SIBLING_EXTRA} bytes"
        )
    if is_partial(path):
        final = Path(path).with_name(name[1 : -len(PARTIAL_SUFFIX)])
        raise OutputPathError(f"{path} is where eocube builds the store of {final} during a run; name {final}")


def check_output(path: Path | str, *, overwrite: bool = False, resume: bool = False) -> None:
    """Raise :class:`OutputPathError` unless a store may be written at ``path``.

    A missing path is fine if it can be written. An existing eocube store is fine with
    ``overwrite`` (it will be replaced) or ``resume`` (a backfill continues it); anything
    else at the path is never replaced.
    """
    check_path_name(path)
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not is_eocube_store(path):
            what = (
                "a file"
                if path.is_file()
                else (
                    "an empty folder"
                    if path.is_dir() and not any(path.iterdir())
                    else "a folder"
                    if path.is_dir()
                    else "something"
                )
            )
            raise OutputPathError(
                f"output {path} exists and is {what}, not an eocube store; eocube never replaces "
                "what it did not write: choose another output path"
            )
        if not (overwrite or resume):
            raise OutputPathError(
                f"output {path} is an existing eocube store; pass --overwrite (overwrite=True) to replace it"
            )
    check_beside(beside(path))
    check_writable(path)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the C library, kernel or file system does not support it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_into_place(new: Path, path: Path) -> Path:
    """Put the directory ``new`` at ``path`` (which exists) and return where the old ``path`` now is.

    One atomic exchange where supported: ``path`` holds the old or the new directory at
    every instant, and ``new`` then holds the old one. Elsewhere two renames (``path`` to
    ``.<name>.old-<hex>``, then ``new`` to ``path``), undone if the second fails; a kill
    between them leaves no directory at ``path``, which :meth:`ZarrEngine.recover` puts back.
    """
    if _exchange(new, path):
        return new
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    return old


def remove_store(path: Path) -> None:
    """Remove a replaced eocube store (a folder, or a link to one: only the link goes)."""
    if path.is_symlink():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


#: errno values of a write that failed for want of space or permission at the output
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def output_error(exc: OSError, path: Path, tmp: Path) -> OutputPathError | None:
    """The one-line error for an ``OSError`` of writing ``path`` (through ``tmp``), or None if it is not one."""
    named = str(exc.filename or "")
    inside = not named or named.startswith((str(tmp), str(path))) or Path(path).name in Path(named).as_posix()
    if exc.errno not in _OUTPUT_ERRNOS or not inside:
        return None
    return OutputPathError(f"cannot write {path}: {exc.strerror or exc}; nothing was left at {path}")
