"""Servers on loopback that misbehave on purpose, for testing clients against real failures.

* ``FaultyProxy(upstream)`` forwards every request to ``upstream`` (a loopback URL) but, per
  request, may answer with an HTTP error, answer late, or drop the connection without answering.
* ``RangeServer(root)`` serves files with HTTP Range requests (what GDAL's /vsicurl/ sends), with
  the same seeded faults, and, given a ``TokenAuthority``, acts like Azure Blob Storage behind the
  Planetary Computer: a token endpoint issuing short-lived SAS tokens and a storage that answers
  403 to a missing, forged, expired or revoked one. GDAL reaches it as an HTTP proxy
  (``GDAL_HTTP_PROXY``) for ``http://<account>.blob.core.windows.net/...`` hrefs, so the
  signing code under test sees real Planetary-Computer-shaped URLs.

Faults are decided by a seeded schedule so tests are repeatable. Only loopback addresses are used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import httpx


@dataclass
class FaultPlan:
    """Share of requests (0-1) that get each fault; the rest are served untouched.

    ``draw()`` picks the fate of one request from a seeded schedule and counts it.
    ``broken`` lists URL paths that always fail (used by servers of files).
    """

    error_share: float = 0.0
    error_status: int = 503
    slow_share: float = 0.0
    slow_seconds: float = 2.0
    drop_share: float = 0.0
    always_status: int | None = None  # answer every request with this status (e.g. 400)
    broken: set[str] = field(default_factory=set)
    seed: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"forwarded": 0, "error": 0, "slow": 0, "drop": 0, "broken": 0}
    )

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self) -> str:
        """``"error"``, ``"slow"``, ``"drop"`` or ``"forwarded"`` for the next request."""
        with self._lock:
            u = self._rng.random()
            if u < self.error_share:
                kind = "error"
            elif u < self.error_share + self.slow_share:
                kind = "slow"
            elif u < self.error_share + self.slow_share + self.drop_share:
                kind = "drop"
            else:
                kind = "forwarded"
            self.counts[kind] += 1
            return kind


class FaultyProxy:
    """Context manager running the proxy in a thread; ``.url`` is its loopback address."""

    def __init__(self, upstream: str, plan: FaultPlan, port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.plan.draw()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "slow":
                    time.sleep(proxy.plan.slow_seconds)
                status = proxy.plan.always_status or (proxy.plan.error_status if fault == "error" else None)
                if status is not None:
                    payload = b'{"code": "InjectedFault", "description": "injected by FaultyProxy"}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")
                }
                resp = httpx.request(
                    self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=30
                )
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


#: the storage account and container of the fake blob storage; hrefs are http://ACCOUNT.blob.core.windows.net/CONTAINER/<path>
BLOB_ACCOUNT, BLOB_CONTAINER = "eocubetest", "archive"


def blob_href(root: Path, href: str) -> str:
    """``file://<root>/<path>`` (or a plain path under ``root``) as the fake blob storage's unsigned URL."""
    rel = Path(unquote(urlparse(href).path)).relative_to(root)
    return f"http://{BLOB_ACCOUNT}.blob.core.windows.net/{BLOB_CONTAINER}/{rel.as_posix()}"


class TokenAuthority:
    """Issues SAS-like tokens valid for ``lifetime_s`` seconds and checks them (HMAC-signed, like Azure's).

    ``counts``: tokens issued, and requests refused for each reason. :meth:`revoke` makes every token
    issued so far invalid before its expiry (a key rotation), which only a 403 tells the client.
    """

    def __init__(self, lifetime_s: float = 3.0, key: bytes = b"eocube-test-key"):
        self.lifetime_s, self.key = lifetime_s, key
        self.revoked_before = 0.0
        self.counts = {
            "issued": 0,
            "refused_missing": 0,
            "refused_expired": 0,
            "refused_revoked": 0,
            "refused_forged": 0,
        }
        self.issued: list[str] = []
        self._lock = threading.Lock()

    def _sig(self, account: str, container: str, start: str, expiry: str) -> str:
        return hmac.new(self.key, f"{account}/{container}/{start}/{expiry}".encode(), hashlib.sha256).hexdigest()

    def issue(self, account: str, container: str) -> dict:
        now = time.time()
        start = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        expiry = dt.datetime.fromtimestamp(now + self.lifetime_s, dt.UTC).isoformat(timespec="microseconds")
        expiry = expiry.replace("+00:00", "Z")
        token = f"st={start}&se={expiry}&sp=rl&sv=2021-06-08&sr=c&sig={self._sig(account, container, start, expiry)}"
        with self._lock:
            self.counts["issued"] += 1
            self.issued.append(token)
        return {"msft:expiry": expiry, "token": token}

    def refusal(self, account: str, container: str, query: str) -> str | None:
        """Why a request with ``query`` is refused (``None``: it is let through)."""
        q = {k: v[0] for k, v in parse_qs(query).items()}
        if "sig" not in q or "se" not in q or "st" not in q:
            return "refused_missing"
        if not hmac.compare_digest(q["sig"], self._sig(account, container, q["st"], q["se"])):
            return "refused_forged"
        start = dt.datetime.fromisoformat(q["st"].replace("Z", "+00:00")).timestamp()
        if start < self.revoked_before:
            return "refused_revoked"
        if dt.datetime.fromisoformat(q["se"].replace("Z", "+00:00")).timestamp() <= time.time():
            return "refused_expired"
        return None

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] += 1

    def revoke(self) -> None:
        self.revoked_before = time.time()


class RangeServer:
    """Serve files under ``root`` on 127.0.0.1 with single- and multi-range GETs, injecting ``faults``.

    Paths are served as ``/<path under root>`` or, as an HTTP proxy, as
    ``http://<BLOB_ACCOUNT>.blob.core.windows.net/<BLOB_CONTAINER>/<path under root>``; with an
    ``authority`` those need a valid token (else 403), issued at ``/api/sas/v1/token/<account>/<container>``.
    """

    def __init__(self, root: Path, faults: FaultPlan | None = None, authority: TokenAuthority | None = None):
        self.root, self.faults, self.authority = root, faults or FaultPlan(), authority
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
                url = urlparse(self.path)
                path = unquote(url.path)
                if path.startswith("/api/sas/v1/token/") and server.authority is not None:
                    account, container = path.removeprefix("/api/sas/v1/token/").split("/")[:2]
                    return self._send(
                        200,
                        json.dumps(server.authority.issue(account, container)).encode(),
                        {"Content-Type": "application/json"},
                    )
                if url.netloc.endswith(".blob.core.windows.net"):  # a proxied request to the fake blob storage
                    account = url.netloc.split(".")[0]
                    container, _, path = path.lstrip("/").partition("/")
                    if server.authority is not None:
                        refusal = server.authority.refusal(account, container, url.query)
                        if refusal:
                            server.authority.refuse(refusal)
                            return self._send(403, b"AuthenticationFailed", {"Content-Type": "text/plain"})
                    path = "/" + path
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
                    return self._send(
                        206,
                        data[start : end + 1],
                        {"Content-Type": "image/tiff", "Content-Range": f"bytes {start}-{end}/{len(data)}"},
                    )
                boundary = "eocubeboundary"
                body = (
                    b"".join(
                        f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {s}-{e}/{len(data)}\r\n\r\n".encode()
                        + data[s : e + 1]
                        + b"\r\n"
                        for s, e in ranges
                    )
                    + f"--{boundary}--\r\n".encode()
                )
                return self._send(206, body, {"Content-Type": f"multipart/byteranges; boundary={boundary}"})

            do_HEAD = do_GET

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.proxy = f"127.0.0.1:{self._httpd.server_address[1]}"
        self.token_url = f"{self.url}/api/sas/v1/token"

    def patch_url(self, href: str) -> str:
        """``file://<root>/...`` -> ``http://127.0.0.1:<port>/...``."""
        rel = Path(unquote(urlparse(href).path)).relative_to(self.root)
        return f"{self.url}/{rel.as_posix()}"

    def __enter__(self) -> RangeServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
