"""A real STAC API over loopback for local archives: ``rustac serve`` in a subprocess.

Used for the embedded demo archive and in tests; clients talk to it with pystac-client
exactly as they would to a remote API.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx


class StacServerError(RuntimeError):
    """The local STAC API could not be started."""


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
    collections = sorted(stac.glob("*/collection.json"))
    items = sorted(stac.glob("*/items.json"))
    if not collections or not items:
        raise StacServerError(f"no STAC collections/items under {stac}; generate the archive first (eocube demo-archive)")
    return collections + items


@contextlib.contextmanager
def serve_archive(archive: Path, host: str = "127.0.0.1", port: int | None = None,
                  public_url: str | None = None, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve an archive's STAC files as a STAC API; yields its root URL, stops it on exit.

    ``public_url`` is the address written into the API's links (e.g. that of a proxy in
    front of it); by default the bind address.
    """
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    cmd = [_rustac_executable(), "serve", "--addr", public_url or f"{host}:{port}", "--bind", f"{host}:{port}",
           *map(str, archive_stac_files(archive))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise StacServerError(f"rustac serve exited with code {proc.returncode}: {err.strip()[-500:]}")
            try:
                if httpx.get(f"{url}/collections", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise StacServerError(f"rustac serve did not answer on {url} within {startup_timeout_s:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
