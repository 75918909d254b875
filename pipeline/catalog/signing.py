"""Asset-URL signing for catalogs whose assets need a token (Planetary Computer).

Planetary Computer hands out a SAS token per Azure storage account/container
(``GET {signing_url}/{account}/{container}`` -> ``{"token", "msft:expiry"}``). Tokens are
cached and fetched again shortly before they expire, so long Dask jobs keep reading.
Hrefs are signed just before reading, not at search time.
"""
from __future__ import annotations

import datetime as dt
import threading
from urllib.parse import urlparse

import httpx

_REFRESH_MARGIN = dt.timedelta(minutes=5)


class PlanetaryComputerSigner:
    """Signs ``https://<account>.blob.core.windows.net/<container>/...`` hrefs."""

    def __init__(self, token_url: str = "https://planetarycomputer.microsoft.com/api/sas/v1/token", timeout_s: float = 30.0):
        self.token_url = token_url.rstrip("/")
        self.timeout_s = timeout_s
        self._tokens: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
        self._lock = threading.Lock()

    def _token(self, account: str, container: str) -> str:
        key = (account, container)
        now = dt.datetime.now(dt.timezone.utc)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] - _REFRESH_MARGIN > now:
                return cached[0]
            resp = httpx.get(f"{self.token_url}/{account}/{container}", timeout=self.timeout_s)
            resp.raise_for_status()
            body = resp.json()
            expiry = dt.datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00"))
            self._tokens[key] = (body["token"], expiry)
            return body["token"]

    def sign(self, href: str) -> str:
        """The href with a valid SAS token appended; non-blob hrefs are returned unchanged."""
        parsed = urlparse(href)
        if not parsed.netloc.endswith(".blob.core.windows.net") or "sig=" in parsed.query:
            return href
        account = parsed.netloc.split(".")[0]
        container = parsed.path.lstrip("/").split("/", 1)[0]
        sep = "&" if parsed.query else "?"
        return f"{href}{sep}{self._token(account, container)}"


def make_signer(kind: str, signing_url: str | None = None):
    """A callable ``href -> signed href`` for a catalog's ``signing`` setting."""
    if kind == "planetary-computer":
        return PlanetaryComputerSigner(signing_url or PlanetaryComputerSigner().token_url).sign
    return lambda href: href
