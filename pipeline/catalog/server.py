"""A real STAC API over loopback for local archives: ``rustac serve`` in a subprocess.

Used for the embedded demo archive and in tests; clients talk to it with pystac-client
exactly as they would to a remote API.

``rustac serve`` refuses to start if any one of its files fails to deserialise, without
naming it. :func:`serve_archive` therefore first reads every file with the same Rust
deserialiser (:func:`rustac.read_sync`): an unreadable file, or an item of an items
FeatureCollection that rustac rejects, is left out with a :class:`StacInputWarning` (and a
log line) naming the file, the item and the reason; the rest is served, cleaned copies
coming from a temporary folder. The archive itself is never modified.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: Items named one by one per file in warnings; the rest of a file's rejects are counted in one more.
MAX_ITEM_WARNINGS = 10


class StacServerError(RuntimeError):
    """The local STAC API could not be started."""


class StacInputWarning(UserWarning):
    """A local STAC file, or an item in one, that ``rustac serve`` would reject: it is left out."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rustac_executable() -> str:
    exe = shutil.which("rustac") or str(Path(sys.executable).with_name("rustac"))
    if not Path(exe).exists():
        raise StacServerError("the `rustac` command was not found; install the project (pip install -e .) to get it")
    return exe


def archive_stac_files(archive: Path) -> list[Path]:
    """Collection JSONs first, then item FeatureCollections, of an archive's ``stac/`` folder."""
    stac = Path(archive) / "stac"
    collections = sorted(p for p in stac.glob("*/collection.json") if p.is_file())
    items = sorted(p for p in stac.glob("*/items.json") if p.is_file())
    for odd in sorted(p for p in [*stac.glob("*/collection.json"), *stac.glob("*/items.json")] if not p.is_file()):
        warnings.warn(f"{odd} is not a file; left out of the served catalog", StacInputWarning, stacklevel=2)
    if not collections or not items:
        raise StacServerError(
            f"no STAC collections/items under {stac}; generate the archive first (eocube demo-archive)"
        )
    return collections + items


class _Pairs(dict):
    """A JSON object with a repeated key: re-serialises with every pair, as read, so rustac sees the repeat."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        self.pairs = pairs

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]  # deliberately not a view: the repeats too
        """Every pair, repeats included: json.dumps (C and Python encoders) writes a dict subclass from these."""
        return self.pairs

    def repeated(self, key: str) -> bool:
        """Whether ``key`` occurs more than once."""
        return sum(k == key for k, _ in self.pairs) > 1


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: a dict, or a :class:`_Pairs` where a key repeats."""
    return _Pairs(pairs) if len({k for k, _ in pairs}) < len(pairs) else dict(pairs)


def _only(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``obj`` restricted to ``key`` (every occurrence of it)."""
    return _object([(k, v) for k, v in obj.items() if k == key])


def _short(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, cut to ``limit`` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rustac_read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(value, None)`` where rustac deserialises ``path``, else ``(None, its error)``."""
    import rustac

    try:
        return rustac.read_sync(str(path)), None
    except (rustac.RustacError, OSError, ValueError) as exc:
        return None, (str(exc).splitlines() or [type(exc).__name__])[0]


class _ItemChecker:
    """Asks rustac whether lists of features deserialise, as a FeatureCollection, via one scratch file."""

    def __init__(self, scratch: Path):
        self.scratch = scratch

    def error(self, features: list[Any]) -> str | None:
        """rustac's error for a FeatureCollection of ``features``, or None if it reads it."""
        self.scratch.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
        err = _rustac_read(self.scratch)[1]
        return None if err is None else re.sub(r" at line \d+ column \d+$", "", err)  # the scratch file's place

    def rejected(self, features: list[Any]) -> dict[int, str]:
        """Index -> rustac's error for each feature it rejects (bisecting, so a few rejects cost a few reads)."""
        out: dict[int, str] = {}

        def split(lo: int, hi: int) -> None:
            err = self.error(features[lo:hi])
            if err is None:
                return
            if hi - lo == 1:
                out[lo] = err
                return
            mid = (lo + hi) // 2
            split(lo, mid)
            split(mid, hi)

        if features:
            split(0, len(features))
        return out

    def reason(self, feature: Any, err: str) -> str:
        """Why rustac rejects ``feature``: the fields that fail on their own (each is optional to rustac)."""
        if not isinstance(feature, dict):
            return f"not a JSON object ({_short(feature)})"
        bad = []
        for key in dict.fromkeys(feature):
            if self.error([_only(feature, key)]) is None:
                continue
            value = feature[key]
            subs = (
                [s for s in dict.fromkeys(value) if self.error([{key: _only(value, s)}])]
                if key in ("properties", "assets") and isinstance(value, dict)
                else []
            )
            for name, obj, sub in [(f"{key}.{s}", value, s) for s in subs] or [(key, feature, key)]:
                repeated = isinstance(obj, _Pairs) and obj.repeated(sub)
                bad.append(f"'{name}' repeated" if repeated else f"'{name}' = {_short(obj[sub])}")
        return f"invalid {', '.join(bad)} (rustac: {err})" if bad else f"rustac: {err}"


def _leave_out(message: str) -> None:
    """Log and warn (:class:`StacInputWarning`) that something is left out of the served catalog."""
    log.warning(message)
    warnings.warn(message, StacInputWarning, stacklevel=2)


def _clean_items(path: Path, err: str | None, workdir: Path, checker: _ItemChecker) -> Path | None:
    """A copy of items file ``path`` in ``workdir`` without the features rustac rejects; None if none can be served."""
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_object)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _leave_out(f"{path}: file left out, it is not valid JSON: {err or exc}")
        return None
    kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
    if kind == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    elif kind != "FeatureCollection" or not isinstance(doc.get("features"), list):
        _leave_out(
            f"{path}: file left out, it is not a FeatureCollection with a list of features (type {kind!r})"
            + (f"; rustac: {err}" if err else "")
        )
        return None
    features = doc["features"]
    rejected = checker.rejected(features)
    for n, (i, item_err) in enumerate(sorted(rejected.items())):
        if n == MAX_ITEM_WARNINGS:
            _leave_out(f"{path}: {len(rejected) - n} more of its {len(features)} items left out, rejected by rustac")
            break
        item_id = features[i].get("id") if isinstance(features[i], dict) else None
        named = f" (id {item_id!r})" if isinstance(item_id, str) else ""
        _leave_out(f"{path}: item #{i}{named} left out: {checker.reason(features[i], item_err)}")
    cleaned = workdir / path.parent.name / path.name
    cleaned.parent.mkdir(parents=True, exist_ok=True)
    kept = [f for i, f in enumerate(features) if i not in rejected]
    doc = _object([(k, kept if k == "features" else v) for k, v in doc.items()])
    cleaned.write_text(json.dumps(doc), encoding="utf-8")
    still = _rustac_read(cleaned)[1]
    if still is not None:
        _leave_out(f"{path}: file left out, rustac cannot read it: {err or still}")
        return None
    return cleaned


def check_stac_files(paths: list[Path], workdir: Path) -> list[Path]:
    """The files ``rustac serve`` can load, from ``paths`` (collections, then items files).

    A collection is kept as is or left out; an items file is kept as is, replaced by a
    cleaned copy written under ``workdir`` (the items rustac rejects removed) or left out.
    Each thing left out gets a :class:`StacInputWarning` and a log line naming file, item
    (index and id) and reason.
    """
    Path(workdir).mkdir(parents=True, exist_ok=True)
    checker = _ItemChecker(Path(workdir) / "scratch-items.json")
    out: list[Path] = []
    for path in map(Path, paths):
        value, err = _rustac_read(path)
        kind = value.get("type") if value else None
        if path.name == "collection.json":
            if kind == "Collection":
                out.append(path)
            else:
                _leave_out(
                    f"{path}: file left out, "
                    + (f"rustac cannot read it: {err}" if err else f"it is not a STAC Collection (read as {kind!r})")
                )
        elif kind == "FeatureCollection":
            out.append(path)
        elif (cleaned := _clean_items(path, err, workdir, checker)) is not None:
            out.append(cleaned)
    return out


def _start(cmd: list[str], url: str, files: list[Path], stderr: Path, startup_timeout_s: float) -> subprocess.Popen:
    """Start ``cmd`` (rustac serve on ``files``) and wait until ``url`` answers; its stderr goes to ``stderr``."""
    with stderr.open("wb") as err_file:  # a file, not a pipe nobody reads that could fill and block the server
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while proc.poll() is None:
            try:
                if httpx.get(f"{url}/collections", timeout=1.0).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise StacServerError(f"rustac serve did not answer on {url} within {startup_timeout_s:.0f} s")
            time.sleep(0.1)
        last = (stderr.read_text(errors="replace").strip().splitlines() or ["no message"])[-1][:300]
        raise StacServerError(
            f"rustac serve exited with code {proc.returncode} on the checked files {', '.join(map(str, files))}: {last}"
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def serve_archive(
    archive: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    public_url: str | None = None,
    startup_timeout_s: float = 30.0,
) -> Iterator[str]:
    """Serve an archive's STAC files as a STAC API; yields its root URL, stops it on exit.

    ``public_url`` is the address written into the API's links (e.g. that of a proxy in
    front of it); by default the bind address. Files and items that rustac would reject
    are left out with a :class:`StacInputWarning` (see :func:`check_stac_files`).
    """
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    paths = archive_stac_files(archive)
    exe = _rustac_executable()
    with tempfile.TemporaryDirectory(prefix="eocube-stac-") as workdir:
        files = check_stac_files(paths, Path(workdir))
        if not files:
            raise StacServerError(f"none of the STAC files under {Path(archive) / 'stac'} can be served (see warnings)")
        cmd = [exe, "serve", "--addr", public_url or f"{host}:{port}", "--bind", f"{host}:{port}", *map(str, files)]
        proc = _start(cmd, url, files, Path(workdir) / "rustac-serve.log", startup_timeout_s)
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
