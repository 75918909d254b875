"""Reads that are signed just before they happen and that one bad asset cannot sink.

The readers odc-stac and stackstac build into the task graph carry unsigned hrefs and a
:class:`~pipeline.catalog.signing.Signer`; each read signs its href, and an HTTP 403 (an
expired or revoked token) gets the token refreshed and the read tried once more. A read that
still fails (a truncated COG, a server that keeps failing, a corrupt tile) leaves that asset's
pixels of that chunk at the fill value, so they are masked (reflectance nodata, the QA
product's fill code), and is reported, instead of aborting the whole cube.

Failures travel from the worker that saw them to the process that writes the store as Dask
events (``Worker.log_event`` on the topic of a :class:`ReadLog`, read back with
``Client.get_events``), or through this module's memory when the graph runs on a local
scheduler. :meth:`ReadLog.failures` gathers them as ``{item_id: {asset: reason}}``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pystac
import rasterio.errors
from odc.geo.geobox import GeoBox
from odc.loader import RasterLoadParams, RasterSource, RioDriver, RioReader

from pipeline.catalog.signing import NoSigning, Signer
from pipeline.redaction import redact

#: Errors of a read that are the asset's fault (its bytes, its server), not the program's.
READ_ERRORS: tuple[type[BaseException], ...] = (rasterio.errors.RasterioError, OSError, ConnectionError)

_LOCAL: dict[str, list[dict]] = {}
_LOCAL_LOCK = threading.Lock()


class CallableSigner:
    """A plain ``href -> href`` function as a :class:`Signer` (nothing to refresh)."""

    def __init__(self, func: Callable[[str], str]):
        self.func = func

    def sign(self, href: str) -> str:
        return self.func(href)

    def refresh(self, href: str) -> None:
        return None


def as_signer(sign: Signer | Callable[[str], str] | None) -> Signer:
    """``sign`` as a :class:`Signer`: itself, a wrapped function, or no signing for None."""
    if sign is None:
        return NoSigning()
    if hasattr(sign, "refresh") and hasattr(sign, "sign"):
        return sign
    return CallableSigner(sign)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def reason_of(exc: BaseException) -> str:
    """One redacted line naming an exception: ``Type: first line``, with the first line of its
    innermost cause where it has one (GDAL's own message under rasterio's), at most 300 characters."""
    text = f"{type(exc).__name__}: {_first_line(exc)}"
    cause = exc
    while (inner := cause.__cause__ or cause.__context__) is not None and inner is not cause:
        cause = inner
    if cause is not exc and _first_line(cause) and _first_line(cause) != _first_line(exc):
        text += f" ({_first_line(cause)})"
    return redact(text)[:300]


def is_forbidden(exc: BaseException) -> bool:
    """Whether a read failed because the storage refused the credential (HTTP 403)."""
    text = str(exc)
    return "403" in text and ("HTTP" in text or "Forbidden" in text or "response code" in text)


def report_failure(topic: str, href: str, reason: str, bounds: tuple[float, float, float, float] | None) -> None:
    """Record one failed read of ``href`` (unsigned) on ``topic``: a Dask event on a worker, else in memory."""
    payload = {"href": redact(href), "reason": redact(reason), "bounds": list(bounds) if bounds else None}
    try:
        from distributed import get_worker

        get_worker().log_event(topic, payload)
        return
    except (ImportError, ValueError):  # not inside a Dask worker task: a local scheduler in this process
        pass
    with _LOCAL_LOCK:
        _LOCAL.setdefault(topic, []).append(payload)


def reported(topic: str) -> list[dict]:
    """Every failure reported on ``topic`` so far: from this process and from the Dask cluster, if one is in use."""
    with _LOCAL_LOCK:
        out = list(_LOCAL.get(topic, []))
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return out
    return out + [msg for _, msg in client.get_events(topic)]


def read_with_signing(signer: Signer, href: str, read: Callable[[str], Any]) -> Any:
    """``read(signed href)``; on HTTP 403 the token is refreshed and the read tried once more."""
    try:
        return read(signer.sign(href))
    except READ_ERRORS as exc:
        if not is_forbidden(exc):
            raise
        signer.refresh(href)
        return read(signer.sign(href))


@dataclass
class ReadLog:
    """Where a cube's readers report failed reads, and which item and asset each href belongs to.

    ``topic`` names the run's Dask event topic; ``assets`` maps every href (as in the items,
    and absolute) to ``(item id, asset key)``.
    """

    topic: str = field(default_factory=lambda: f"eocube-read-failures-{uuid.uuid4().hex}")
    assets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add_items(self, items: Iterable[pystac.Item], asset_keys: Iterable[str]) -> None:
        keys = list(asset_keys)
        for item in items:
            for key in keys:
                if key in item.assets:
                    asset = item.assets[key]
                    for href in {asset.href, asset.get_absolute_href() or asset.href}:
                        self.assets[href] = (item.id, key)

    def failures(
        self, items: Collection[str] | None = None, bbox: tuple[float, float, float, float] | None = None
    ) -> dict[str, dict[str, str]]:
        """Failed reads reported so far as ``{item_id: {asset: reason}}``, with the number of chunks affected;
        with ``items`` only those of these items, with ``bbox`` (``xmin, ymin, xmax, ymax`` in the cube's CRS)
        only those of chunks centred in it: the failures of one slice while others are computed beside it."""
        counts: dict[tuple[str, str], list] = {}
        for msg in reported(self.topic):
            item, asset = self.assets.get(msg["href"], (msg["href"], "?"))
            if items is not None and item not in items and msg["href"] not in items:
                continue
            if bbox is not None and msg["bounds"] and not _centred_in(msg["bounds"], bbox):
                continue
            entry = counts.setdefault((item, asset), [msg["reason"], set()])
            entry[1].add(tuple(msg["bounds"] or ()))
        out: dict[str, dict[str, str]] = {}
        for (item, asset), (reason, chunks) in sorted(counts.items()):
            out.setdefault(item, {})[asset] = f"{reason} (read failed in {len(chunks)} chunk(s); pixels masked)"
        return out

    def forget(self) -> None:
        """Drop this log's failures kept in this process's memory."""
        with _LOCAL_LOCK:
            _LOCAL.pop(self.topic, None)


def _centred_in(bounds: Sequence[float], bbox: tuple[float, float, float, float]) -> bool:
    x, y = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    return bbox[0] <= x <= bbox[2] and bbox[1] <= y <= bbox[3]


class SignedReader:
    """odc-stac's rasterio reader, signing just before the read and reporting (not raising) a failed read."""

    def __init__(self, src: RasterSource, ctx: Any, signer: Signer, topic: str):
        self._src, self._ctx, self._signer, self._topic = src, ctx, signer, topic

    def read(
        self, cfg: RasterLoadParams, dst_geobox: GeoBox, *, dst: np.ndarray | None = None, selection: Any = None
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        strict = replace(cfg, fail_on_error=True)

        def read(href: str) -> tuple[tuple[slice, slice], np.ndarray]:
            return RioReader(self._src.patch(uri=href), self._ctx).read(
                strict, dst_geobox, dst=dst, selection=selection
            )

        try:
            return read_with_signing(self._signer, self._src.uri, read)
        except READ_ERRORS as exc:
            report_failure(self._topic, self._src.uri, reason_of(exc), dst_geobox.boundingbox.bbox)
        empty = dst[0:0, 0:0] if dst is not None else np.empty((0, 0), dtype=cfg.dtype)
        return np.s_[0:0, 0:0], empty


class SignedReadDriver(RioDriver):
    """odc-stac's rasterio driver with :class:`SignedReader` readers (pickles into the task graph)."""

    def __init__(self, signer: Signer, topic: str):
        super().__init__()
        self.signer, self.topic = signer, topic

    def open(self, src: RasterSource, ctx: Any) -> SignedReader:  # type: ignore[override]  # any reader will do; odc types its own
        return SignedReader(src, ctx, self.signer, self.topic)


def stackstac_reader(signer: Signer, topic: str) -> type:
    """A stackstac ``Reader`` class that signs when it is made (in the read task) and reports failed reads.

    A failed read returns the fill value for its window, as stackstac's ``errors_as_nodata`` does.
    """
    from stackstac.nodata_reader import nodata_for_window
    from stackstac.rio_reader import AutoParallelRioReader

    class SignedStackstacReader(AutoParallelRioReader):
        url: str

        def __init__(self, *, url: str, **kwargs: Any):
            self.unsigned = url
            super().__init__(url=url, **kwargs)

        def read(self, window, **kwargs):  # noqa: ANN001
            def attempt(href: str):
                if href != self.url:  # a new token: reopen
                    self.close()
                    self.url = href
                return AutoParallelRioReader.read(self, window, **kwargs)

            try:
                return read_with_signing(signer, self.unsigned, attempt)
            except (*READ_ERRORS, RuntimeError) as exc:  # stackstac wraps read errors in RuntimeError
                cause = exc.__cause__ or exc
                bounds = rasterio.windows.bounds(window, self.spec.transform)
                report_failure(topic, self.unsigned, reason_of(cause), tuple(bounds))
                return nodata_for_window(window, self.fill_value, self.dtype)

        def __getstate__(self):  # a reader moved to another worker signs afresh there
            return {**super().__getstate__(), "url": self.unsigned}

    return SignedStackstacReader
