"""Search a STAC API for the items of a request, one collection per sensor.

Paging uses the catalog's page ``limit``; HTTP 429/5xx and connection failures are
retried with exponential backoff (urllib3 ``Retry`` inside pystac-client's session);
other 4xx answers and unreachable catalogs raise :class:`CatalogError` naming the
catalog and URL. The same acquisition found twice is kept once (see :func:`deduplicate`).
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from typing import Any

import pystac
import requests
from pystac_client import Client, ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from pipeline.catalog.config import CatalogConfig, CatalogError
from pipeline.model import CubeRequest, RequestError, SearchResult, SensorItems

log = logging.getLogger(__name__)


class EmptySensorWarning(UserWarning):
    """A requested sensor has no items in the search window (the cube is made of the others)."""


class EmptySearchError(RequestError):
    """The search matched no items at all."""


_CONNECTION_FAILURES = (
    "Max retries exceeded",
    "Failed to establish",
    "Connection refused",
    "timed out",
    "RemoteDisconnected",
    "Connection aborted",
)


def _api_error(catalog: CatalogConfig, url: str, exc: APIError, what: str) -> CatalogError:
    """A one-line CatalogError: 'unreachable' for connection failures, else the API's answer."""
    text = str(exc)
    if any(marker in text for marker in _CONNECTION_FAILURES):
        return CatalogError(
            f"catalog {catalog.name!r} at {url} is unreachable (after {catalog.search.retries} retries)"
        )
    status = f" (HTTP {exc.status_code})" if getattr(exc, "status_code", None) else ""
    return CatalogError(f"catalog {catalog.name!r} at {url} {what}{status}: {' '.join(text.split())[:200]}")


def _client(catalog: CatalogConfig, url: str) -> Client:
    s = catalog.search
    retry = Retry(
        total=s.retries,
        connect=s.retries,
        read=s.retries,
        status=s.retries,
        backoff_factor=s.backoff_s,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    io = StacApiIO(timeout=s.timeout_s, max_retries=retry)
    try:
        return Client.open(url, stac_io=io)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise CatalogError(f"catalog {catalog.name!r} at {url} is unreachable: {type(exc).__name__}") from exc
    except APIError as exc:
        raise _api_error(catalog, url, exc, "answered with an error") from exc


def _tile(item: pystac.Item) -> str:
    """The product tile of an item: MGRS, WRS-2 path/row, MODIS h/v, else its rounded bbox."""
    p = item.properties
    for keys in (
        ("s2:mgrs_tile",),
        ("grid:code",),
        ("landsat:wrs_path", "landsat:wrs_row"),
        ("modis:horizontal-tile", "modis:vertical-tile"),
    ):
        if all(p.get(k) is not None for k in keys):
            return "/".join(str(p[k]) for k in keys)
    return str(tuple(round(b, 3) for b in (item.bbox or ())))


def acquisition_key(item: pystac.Item) -> tuple[str, str, str, str]:
    """What makes two items the same acquisition: collection, platform, start time (to the second), tile."""
    p = item.properties
    when = str(p.get("datetime") or p.get("start_datetime"))[:19]
    return (str(item.collection_id), str(p.get("platform", "")).lower(), when, _tile(item))


def processing_stamp(item: pystac.Item) -> str:
    """When an item was (re)processed; later wins in :func:`deduplicate`."""
    p = item.properties
    return str(p.get("s2:generation_time") or p.get("updated") or p.get("created") or "") + item.id


def deduplicate(items: list[pystac.Item]) -> tuple[list[pystac.Item], list[str]]:
    """Keep one item per acquisition (:func:`acquisition_key`): the most recently processed.

    Returns the kept items (in time order) and the ids that were dropped.
    """
    best: dict[tuple, pystac.Item] = {}
    for item in items:
        key = acquisition_key(item)
        if key not in best or processing_stamp(item) > processing_stamp(best[key]):
            best[key] = item
    kept = sorted(
        best.values(), key=lambda i: (str(i.properties.get("datetime") or i.properties.get("start_datetime")), i.id)
    )
    kept_ids = {i.id for i in kept}
    return kept, [i.id for i in items if i.id not in kept_ids]


def solar_day(item: pystac.Item) -> dt.date:
    """Local solar date of an acquisition: UTC time shifted by the footprint centre's longitude / 15 h.

    Scenes of one overpass (adjacent tiles, a swath crossing midnight UTC) share it; it
    is the key odc-stac's ``groupby="solar_day"`` uses to mosaic them into one time step.
    """
    p = item.properties
    when = dt.datetime.fromisoformat(str(p.get("datetime") or p.get("start_datetime")).replace("Z", "+00:00"))
    lon = (item.bbox[0] + item.bbox[2]) / 2 if item.bbox else 0.0
    return (when + dt.timedelta(hours=lon / 15.0)).date()


def group_by_solar_day(items: list[pystac.Item]) -> dict[dt.date, list[pystac.Item]]:
    """Items grouped by :func:`solar_day`, in date order."""
    groups: dict[dt.date, list[pystac.Item]] = {}
    for item in items:
        groups.setdefault(solar_day(item), []).append(item)
    return dict(sorted(groups.items()))


def search_items(request: CubeRequest, catalog: CatalogConfig, url: str | None = None) -> SearchResult:
    """Items per requested sensor; raises :class:`EmptySearchError` when none at all match."""
    url = url or catalog.url
    if not url:
        raise CatalogError(f"catalog {catalog.name!r} has no URL (a local archive must be served first)")
    client = _client(catalog, url)
    out = SearchResult()
    for sensor in request.sensors:
        ref = catalog.collection_for(sensor)
        query = None
        if request.max_cloud_cover is not None and client.conforms_to(ConformanceClasses.QUERY):
            query = {"eo:cloud_cover": {"lte": request.max_cloud_cover}}
        kwargs: dict[str, Any] = dict(
            collections=[ref.collection],
            datetime=request.datetime_range,
            limit=catalog.search.limit,
            max_items=catalog.search.max_items,
            query=query,
        )
        if request.geometry is not None:
            kwargs["intersects"] = request.geometry
        else:
            kwargs["bbox"] = list(request.area_bbox())
        try:
            found = list(client.search(**kwargs).items())
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CatalogError(f"catalog {catalog.name!r} at {url} is unreachable: {type(exc).__name__}") from exc
        except APIError as exc:
            raise _api_error(catalog, url, exc, f"rejected the search for {ref.collection!r}") from exc
        if request.max_cloud_cover is not None:  # also covers APIs without the query extension
            found = [i for i in found if i.properties.get("eo:cloud_cover", 0) <= request.max_cloud_cover]
        kept, dropped = deduplicate(found)
        log.info("%s: %d items in %s (%d duplicates dropped)", sensor, len(kept), ref.collection, len(dropped))
        out[sensor] = SensorItems(sensor, ref.collection, catalog.profile_for(sensor), kept, dropped)
    if not any(s.items for s in out.values()):
        raise EmptySearchError(
            f"no items in catalog {catalog.name!r} for sensors {request.sensors} in bbox {list(request.area_bbox())} "
            f"between {request.start} and {request.end}"
        )
    empty = [sensor for sensor, s in out.items() if not s.items]
    if empty:
        more = "" if request.bands else "; the cube's bands are those the other sensors share"
        warnings.warn(
            f"no items in catalog {catalog.name!r} for sensor(s) {empty} between {request.start} and "
            f"{request.end}: the cube holds the others only{more}",
            EmptySensorWarning,
            stacklevel=2,
        )
    return out
