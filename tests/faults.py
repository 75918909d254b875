"""A fault-injecting HTTP proxy on loopback, for testing clients against flaky servers.

``FaultyProxy(upstream)`` forwards every request to ``upstream`` (a loopback URL) but,
per request, may answer with an HTTP error, answer late, or drop the connection
without answering. Faults are decided by a seeded schedule so tests are repeatable.
Only loopback addresses are used.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    counts: dict[str, int] = field(default_factory=lambda: {"forwarded": 0, "error": 0, "slow": 0, "drop": 0,
                                                            "broken": 0})

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
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                resp = httpx.request(self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=30)
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

    def __enter__(self) -> "FaultyProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
