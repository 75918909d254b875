"""Check, before loading, that every asset of every item can be opened and decoded.

A COG that stays broken after GDAL's retries (a missing object, a server that keeps
failing, a truncated file) would otherwise abort the whole cube mid-way. Probing opens
each asset with the remote-read GDAL options and decodes its coarsest overview (a few
KiB); items with an unreadable asset are left out of the cube, reported in one line
each (item, asset, href, reason) and recorded in the store's ``eocube:failed_items``.
Probes run as Dask tasks on the active scheduler, one per item (the options travel with
the tasks).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import dask
import pystac
import rasterio

from pipeline.catalog.signing import NoSigning, Signer
from pipeline.cube.gdal_env import rasterio_env
from pipeline.cube.reads import read_with_signing, reason_of
from pipeline.redaction import redact

log = logging.getLogger(__name__)


class UnreadableAssetWarning(UserWarning):
    """An item was left out of the cube because one of its assets could not be read."""


def probe_hrefs(hrefs: Sequence[str], signer: Signer | None = None) -> list[str | None]:
    """Per href: ``None`` when it opens and its coarsest overview decodes, else the reason (one redacted line).

    All hrefs are probed inside one GDAL environment (one Dask task per item), each signed
    just before it is opened.
    """
    signer = signer or NoSigning()
    with rasterio_env():
        return [_probe_one(signer, h) for h in hrefs]


def _decode_coarsest(href: str) -> None:
    with rasterio.open(href) as src:
        factors = src.overviews(1)
        step = factors[-1] if factors else 1
        src.read(1, out_shape=(max(1, src.height // step), max(1, src.width // step)))


def _probe_one(signer: Signer, href: str) -> str | None:
    try:
        read_with_signing(signer, href, _decode_coarsest)
    except Exception as exc:  # GDAL/rasterio raise several error types for one cause
        return reason_of(exc)
    return None


def probe_items(
    items: Sequence[pystac.Item], assets: Sequence[str], signer: Signer | None = None
) -> dict[str, dict[str, str]]:
    """Unreadable assets per item id: ``{item_id: {asset: reason}}`` (empty when all read).

    An asset listed in ``assets`` but missing from an item counts as unreadable.
    """
    jobs: list[list[tuple[str, str]]] = []
    tasks = []
    failed: dict[str, dict[str, str]] = {}
    for item in items:
        present = [a for a in assets if a in item.assets]
        for asset in (a for a in assets if a not in item.assets):
            failed.setdefault(item.id, {})[asset] = "asset missing from the item"
        if present:
            jobs.append([(item.id, a) for a in present])
            tasks.append(dask.delayed(probe_hrefs, pure=True)([item.assets[a].href for a in present], signer))
    for job, reasons in zip(jobs, dask.compute(*tasks), strict=True):
        for (item_id, asset), reason in zip(job, reasons, strict=True):
            if reason is not None:
                failed.setdefault(item_id, {})[asset] = reason
    return failed


def report_failures(failed: dict[str, dict[str, str]], items: Sequence[pystac.Item]) -> None:
    """Log and warn once per unreadable asset, naming item, asset and (unsigned, redacted) href."""
    by_id = {i.id: i for i in items}
    for item_id, assets in failed.items():
        for asset, reason in assets.items():
            href = redact(by_id[item_id].assets[asset].href) if asset in by_id[item_id].assets else "-"
            message = f"item {item_id} asset {asset} ({href}) is unreadable, item left out of the cube: {reason}"
            log.error(message)
            warnings.warn(message, UnreadableAssetWarning, stacklevel=3)
