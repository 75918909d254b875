"""Remote reads that survive: the demo COGs served over HTTP on loopback by a small threaded
server that honours Range requests and, by a seeded schedule, fails, resets or delays a
share of them. The cube read through it must equal the cube read from disk; a COG that
stays broken is named (item and asset), left out, and recorded in the store."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import xarray as xr

from pipeline.cube.probe import UnreadableAssetWarning
from faults import FaultPlan
from test_cube_support import demo_found, small_request, with_hrefs

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


class RangeServer:
    """Serve files under ``root`` on 127.0.0.1 with single- and multi-range GETs, injecting ``faults``."""

    def __init__(self, root: Path, faults: FaultPlan):
        self.root, self.faults = root, faults
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                file = (server.root / path.lstrip("/")).resolve()
                if path in server.faults.broken:
                    server.faults.counts["broken"] += 1
                    return self._send(500, b"broken", {"Content-Type": "text/plain"})
                if server.root.resolve() not in file.parents or not file.is_file():
                    return self._send(404, b"not found", {"Content-Type": "text/plain"})
                data = file.read_bytes()
                spec = self.headers.get("Range")
                if not spec:
                    return self._send(200, data, {"Content-Type": "image/tiff", "Accept-Ranges": "bytes"})
                kind = server.faults.draw()
                if kind == "error":
                    return self._send(503, b"try again", {"Content-Type": "text/plain"})
                if kind == "drop":  # RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return None
                if kind == "slow":
                    time.sleep(server.faults.slow_seconds)
                ranges = []
                for part in spec.removeprefix("bytes=").split(","):
                    a, b = part.strip().split("-")
                    start = int(a) if a else len(data) - int(b)
                    end = min(int(b) if (a and b) else len(data) - 1, len(data) - 1)
                    ranges.append((start, end))
                if len(ranges) == 1:
                    start, end = ranges[0]
                    return self._send(206, data[start:end + 1], {
                        "Content-Type": "image/tiff", "Content-Range": f"bytes {start}-{end}/{len(data)}"})
                boundary = "eocubeboundary"
                body = b"".join(
                    f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {s}-{e}/{len(data)}\r\n\r\n".encode()
                    + data[s:e + 1] + b"\r\n" for s, e in ranges) + f"--{boundary}--\r\n".encode()
                return self._send(206, body, {"Content-Type": f"multipart/byteranges; boundary={boundary}"})

            do_HEAD = do_GET

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def patch_url(self, href: str) -> str:
        """``file://<root>/...`` -> ``http://127.0.0.1:<port>/...``."""
        rel = Path(unquote(urlparse(href).path)).relative_to(self.root)
        return f"{self.url}/{rel.as_posix()}"

    def __enter__(self) -> "RangeServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.data_vars) == list(b.data_vars)
    np.testing.assert_array_equal(a.time.values, b.time.values)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)  # NaNs compare equal here


def test_flaky_http_reads_equal_disk_reads(demo_archive: Path):
    from pipeline.cube.assemble import build_cube
    from pipeline.cube.grid import request_geobox

    request = small_request(sensors=["sentinel-2", "landsat"])
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    bands = ["red", "nir08"]
    disk = build_cube(request, found, geobox, bands).compute(scheduler="threads")
    faults = FaultPlan(error_share=0.2, drop_share=0.15, slow_share=0.15, slow_seconds=0.3, seed=7)
    with RangeServer(demo_archive, faults) as server:
        remote = build_cube(request, found, geobox, bands, patch_url=server.patch_url).compute(scheduler="threads")
    print("\nrange requests:", faults.counts)
    assert min(faults.counts[k] for k in ("error", "drop", "slow")) >= 3
    assert json.loads(remote.attrs["eocube:failed_items"]) == {}
    assert remote.sizes["time"] >= 4 and float(remote["valid"].mean()) > 0.2
    _assert_same(disk, remote)


def test_a_cog_that_stays_broken_is_named_left_out_and_recorded(demo_archive: Path, tmp_path: Path, monkeypatch):
    from pipeline.job import assemble_and_write

    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "4")  # give up on the broken COG in ~1.5 s, not ~1 min
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")

    request = small_request(output=tmp_path / "cube.zarr")
    found = demo_found(demo_archive, request)
    victim = found["sentinel-2"].items[1]
    faults = FaultPlan(error_share=0.05, seed=7)
    with RangeServer(demo_archive, faults) as server:
        remote = with_hrefs(found, server.patch_url)
        faults.broken.add(urlparse(server.patch_url(victim.assets["B04"].href)).path)
        with pytest.warns(UnreadableAssetWarning, match=rf"item {victim.id} asset B04 \(http://127.0.0.1:\d+/.*/B04.tif\)"):
            store = assemble_and_write(request, remote)
    assert faults.counts["broken"] >= 1
    ds = xr.open_zarr(store)
    failed = json.loads(ds.attrs["eocube:failed_items"])
    assert list(failed) == [victim.id] and list(failed[victim.id]) == ["B04"]
    assert "500" in failed[victim.id]["B04"]
    sources = json.loads(ds.attrs["eocube:source_items"])
    assert victim.id not in sources["sentinel-2"]
    assert len(sources["sentinel-2"]) == len(found["sentinel-2"].items) - 1
    assert len(sources["landsat"]) == len(found["landsat"].items)
    assert ds.sizes["time"] == len(sources["sentinel-2"]) + len(sources["landsat"])
    assert float(ds["valid"].mean()) > 0.2
