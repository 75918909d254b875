"""Asset-URL signing for catalogs whose assets need a token (Planetary Computer).

Planetary Computer hands out a SAS token per Azure storage account and container
(``GET {signing_url}/{account}/{container}`` -> ``{"token", "msft:expiry"}``); a token lasts
about 45 minutes and a backfill takes hours. So hrefs are never signed at search time nor
when the task graph is built: the readers (:mod:`pipeline.cube.reads`) call
:meth:`Signer.sign` just before each read and :meth:`Signer.refresh` when the storage answers
HTTP 403. Tokens are cached per process (one cache shared by every signer of that token
endpoint) and fetched again before they expire: at their ``msft:expiry`` (else their ``se=``
time) less a margin of a quarter of their lifetime, at most five minutes.

A signer is plain data (its token endpoint), so it pickles into Dask tasks; each worker
process keeps its own token cache.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol
from urllib.parse import parse_qs, urlparse

import httpx

from pipeline.redaction import redact

#: Largest safety margin before a token's expiry at which it is replaced.
MAX_REFRESH_MARGIN = dt.timedelta(minutes=5)
#: Attempts at the token endpoint before a read is given up.
TOKEN_ATTEMPTS = 3

_TOKENS: dict[tuple[str, str, str], tuple[str, dt.datetime, dt.datetime]] = {}
_TOKENS_LOCK = threading.Lock()


class SigningError(ConnectionError):
    """No token could be had for an href (the token endpoint failed or refused)."""


class Signer(Protocol):
    """Turns an asset href into one that can be read now."""

    def sign(self, href: str) -> str:
        """The href, with a credential valid for at least a little longer where it needs one."""

    def refresh(self, href: str) -> None:
        """Forget the credential used for ``href`` (the storage refused it); the next sign fetches a new one."""


class NoSigning:
    """The signer of public catalogs: hrefs are read as they are."""

    def sign(self, href: str) -> str:
        return href

    def refresh(self, href: str) -> None:
        return None

    __call__ = sign


def token_expiry(body: dict, now: dt.datetime) -> dt.datetime:
    """When a token endpoint's answer expires: ``msft:expiry``, else the token's ``se=``, else in 45 minutes."""
    se = parse_qs(str(body.get("token", ""))).get("se")
    stamp = body.get("msft:expiry") or (se[0] if se else None)
    if not stamp:
        return now + dt.timedelta(minutes=45)
    expiry = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return expiry if expiry.tzinfo else expiry.replace(tzinfo=dt.UTC)


def still_fresh(expiry: dt.datetime, issued: dt.datetime, now: dt.datetime) -> bool:
    """Whether a token issued at ``issued`` and expiring at ``expiry`` may still be handed out at ``now``."""
    margin = min(MAX_REFRESH_MARGIN, (expiry - issued) / 4)
    return now < expiry - margin


class PlanetaryComputerSigner:
    """Signs ``https://<account>.blob.core.windows.net/<container>/...`` hrefs with SAS tokens."""

    def __init__(
        self, token_url: str = "https://planetarycomputer.microsoft.com/api/sas/v1/token", timeout_s: float = 30.0
    ):
        self.token_url = token_url.rstrip("/")
        self.timeout_s = timeout_s

    @staticmethod
    def _container(href: str) -> tuple[str, str] | None:
        parsed = urlparse(href)
        if not parsed.netloc.endswith(".blob.core.windows.net"):
            return None
        return parsed.netloc.split(".")[0], parsed.path.lstrip("/").split("/", 1)[0]

    def _fetch(self, account: str, container: str) -> dict:
        url = f"{self.token_url}/{account}/{container}"
        error = ""
        for attempt in range(TOKEN_ATTEMPTS):
            try:
                resp = httpx.get(url, timeout=self.timeout_s)
                if resp.status_code < 500 and resp.status_code != 429:
                    resp.raise_for_status()
                    return resp.json()
                error = f"HTTP {resp.status_code}"
            except httpx.HTTPStatusError as exc:
                raise SigningError(
                    f"the token endpoint {url} refused {account}/{container}: HTTP {exc.response.status_code}"
                ) from None
            except (httpx.TransportError, ValueError) as exc:
                error = type(exc).__name__
            time.sleep(0.5 * 2**attempt)
        raise SigningError(f"no token for {account}/{container} from {url} after {TOKEN_ATTEMPTS} attempts: {error}")

    def _token(self, account: str, container: str) -> str:
        key = (self.token_url, account, container)
        now = dt.datetime.now(dt.UTC)
        with _TOKENS_LOCK:
            cached = _TOKENS.get(key)
            if cached and still_fresh(cached[1], cached[2], now):
                return cached[0]
            body = self._fetch(account, container)
            token = str(body["token"]).lstrip("?")
            _TOKENS[key] = (token, token_expiry(body, now), now)
            return token

    def sign(self, href: str) -> str:
        """The href with a SAS token valid now appended; other hrefs (and signed ones) are returned unchanged."""
        where = self._container(href)
        if where is None or "sig=" in urlparse(href).query:
            return href
        sep = "&" if urlparse(href).query else "?"
        return f"{href}{sep}{self._token(*where)}"

    def refresh(self, href: str) -> None:
        """Drop the cached token of ``href``'s container, so the next :meth:`sign` fetches a new one."""
        where = self._container(href)
        if where is not None:
            with _TOKENS_LOCK:
                _TOKENS.pop((self.token_url, *where), None)

    __call__ = sign

    def __repr__(self) -> str:
        return f"PlanetaryComputerSigner({redact(self.token_url)!r})"


def make_signer(kind: str, signing_url: str | None = None) -> Signer:
    """The signer of a catalog's ``signing`` setting (``none``, ``planetary-computer``, ``earthdata``).

    Earthdata assets are read with GDAL's own credentials (netrc or ``EARTHDATA_TOKEN``), so
    their hrefs are not rewritten.
    """
    if kind == "planetary-computer":
        return PlanetaryComputerSigner(signing_url) if signing_url else PlanetaryComputerSigner()
    return NoSigning()
