"""Stack every requested sensor onto one grid and one time axis.

The multi-sensor cube has one float32 reflectance variable per harmonised common band
(dims ``time, y, x``; with ``storage="scaled-int"`` the integer DN on one CF-packed grid
per band, see :mod:`pipeline.cube.packing`), a ``valid`` mask and a ``sensor`` coordinate along ``time`` telling
which sensor each time step came from. Time steps are sorted; two sensors observing
on the same day remain separate steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.catalog.search import SensorItems
from pipeline.catalog.signing import Signer
from pipeline.cube.gdal_env import configure_remote_reads
from pipeline.cube.load import asset_table, load_sensor
from pipeline.cube.packing import packed_grids
from pipeline.cube.probe import probe_items, report_failures
from pipeline.cube.reads import ReadLog, as_signer
from pipeline.model import CubeRequest, RequestError
from pipeline.redaction import redact_json
from pipeline.sensors import MaskPolicy, SensorProfile, common_bands, load_profile


def mask_policy(request: CubeRequest) -> MaskPolicy:
    """The request's mask policy, filled in with the defaults of :class:`MaskPolicy`."""
    overrides = {k: v for k, v in request.mask.model_dump().items() if v is not None}
    return MaskPolicy(**overrides)


def cube_bands(request: CubeRequest, found: dict[str, SensorItems]) -> list[str]:
    """Bands of the cube: the request's, or those every sensor with items provides."""
    return bands_of_profiles(request, [load_profile(s.profile) for s in found.values() if s.items])


def bands_of_profiles(request: CubeRequest, profiles: Sequence[SensorProfile]) -> list[str]:
    """The request's bands, checked against each of ``profiles``, or those all of them share."""
    shared = common_bands(profiles)
    if request.bands is None:
        if not shared:
            raise RequestError(f"sensors {[p.id for p in profiles]} share no common band")
        return shared
    for p in profiles:
        missing = [b for b in request.bands if b not in {spec.common_name for spec in p.bands}]
        if missing:
            known = sorted({spec.common_name for spec in p.bands})
            raise RequestError(f"unknown band(s) {missing} for {p.id}; it provides {known}")
    return list(request.bands)


class TooManyFailuresError(RequestError):
    """More of a request's items failed to read than its ``max_failed_fraction`` allows."""


@dataclass
class LazyCube:
    """A request's lazy cube and what is known of its items: used, unreadable, and failed while read.

    ``data``: the cube (nothing read yet); ``sources``: item ids per sensor read into it;
    ``unreadable``: ``{item_id: {asset: reason}}`` of the items left out by the probe;
    ``reads``: where the readers report failed reads while ``data`` is computed;
    ``n_items``: the items found.
    """

    data: xr.Dataset
    sources: dict[str, list[str]]
    unreadable: dict[str, dict[str, str]]
    reads: ReadLog
    n_items: int

    def failures(self) -> dict[str, dict[str, str]]:
        """Every failed item so far, ``{item_id: {asset: reason}}``: left out, or failed while read."""
        out = {item: dict(assets) for item, assets in self.unreadable.items()}
        for item, assets in self.reads.failures().items():
            out.setdefault(item, {}).update(assets)
        return out

    def check_failures(self, max_fraction: float) -> dict[str, dict[str, str]]:
        """:meth:`failures`, after raising :class:`TooManyFailuresError` if more than ``max_fraction`` of the items failed."""
        failed = self.failures()
        check_failed_fraction(failed, self.n_items, max_fraction)
        return failed


def check_failed_fraction(failed: dict[str, dict[str, str]], n_items: int, max_fraction: float) -> None:
    """Raise :class:`TooManyFailuresError` (one line naming the items) if more than ``max_fraction`` of ``n_items`` failed."""
    if n_items and len(failed) / n_items > max_fraction:
        named = "; ".join(
            f"{item} ({', '.join(f'{a}: {r}' for a, r in assets.items())})"
            for item, assets in list(failed.items())[:20]
        )
        more = f"; and {len(failed) - 20} more" if len(failed) > 20 else ""
        raise TooManyFailuresError(
            f"{len(failed)} of {n_items} items could not be read, more than max_failed_fraction "
            f"{max_fraction:g} allows: {named}{more}"
        )


def request_cube(request: CubeRequest, found: dict[str, SensorItems]) -> LazyCube:
    """The lazy cube of a request on its grid, read with its catalog's signing.

    The one way every entry point (``run``, backfills, updates, flows) builds a request's
    cube, so all of them sign the reads of signed catalogs. Raises
    :class:`TooManyFailuresError` when the probe already finds more unreadable items than
    ``request.max_failed_fraction`` allows.
    """
    from pipeline.catalog.config import load_catalog
    from pipeline.catalog.signing import make_signer
    from pipeline.cube.grid import request_geobox

    catalog = load_catalog(request.catalog)
    signer = make_signer(catalog.signing, catalog.signing_url)
    log = ReadLog()
    cube = build_cube(request, found, request_geobox(request), cube_bands(request, found), sign=signer, log=log)
    unreadable = json.loads(cube.attrs["eocube:failed_items"])
    lazy = LazyCube(cube, cube.attrs.pop("source_items"), unreadable, log, sum(len(s.items) for s in found.values()))
    lazy.check_failures(request.max_failed_fraction)
    return lazy


def build_cube(
    request: CubeRequest,
    found: dict[str, SensorItems],
    geobox: GeoBox,
    bands: Sequence[str],
    sign: Signer | Callable[[str], str] | None = None,
    log: ReadLog | None = None,
) -> xr.Dataset:
    """The lazy multi-sensor cube of a request (nothing is read until computed).

    Every asset is probed first (:mod:`pipeline.cube.probe`); items with an unreadable
    asset are left out, warned about and listed in ``attrs["eocube:failed_items"]``
    (JSON ``{item_id: {asset: reason}}``). Reads use ``request.engine`` with the remote-read
    GDAL options, sign each href with ``sign`` just before it is read, and report a read that
    fails to ``log`` (its pixels masked, see :mod:`pipeline.cube.reads`).
    """
    policy = mask_policy(request)
    signer = as_signer(sign)
    configure_remote_reads()
    usable, failed = {}, {}
    for key, s in found.items():
        if not s.items:
            continue
        profile = load_profile(s.profile)
        broken = probe_items(s.items, list(asset_table(profile, bands)), signer)
        report_failures(broken, s.items)
        failed.update(broken)
        kept = [i for i in s.items if i.id not in broken]
        if kept:
            usable[key] = replace(s, items=kept)
    if not usable:
        raise RequestError(f"no item could be read; unreadable: {json.dumps(failed)[:500]}")
    packing = None
    if request.storage == "scaled-int":
        packing = packed_grids([(load_profile(s.profile), s.items) for s in usable.values()], bands)
    parts = [
        load_sensor(
            s,
            geobox,
            bands,
            policy=policy,
            chunks=request.chunks,
            resampling=request.resampling,
            sign=signer,
            log=log,
            engine=request.engine,
            packing=packing,
        )
        for s in usable.values()
    ]
    sources = {s.sensor: [i.id for i in s.items] for s in usable.values()}
    cube = parts[0].drop_attrs(deep=False) if len(parts) == 1 else xr.concat(parts, dim="time", combine_attrs="drop")
    if not cube.indexes["time"].is_monotonic_increasing:
        cube = cube.sortby("time")
    time_chunk = request.chunks.get("time", 1)
    if any(c != time_chunk for c in cube.chunksizes["time"][:-1]):
        cube = cube.chunk({"time": time_chunk})
    for b, grid in (packing or {}).items():
        cube[b].attrs.update(grid.attrs())
    cube.attrs["eocube:storage"] = request.storage
    cube.attrs["eocube:mask_policy"] = policy.model_dump_json()
    cube.attrs["eocube:bands"] = list(bands)
    cube.attrs["eocube:engine"] = request.engine
    cube.attrs["eocube:failed_items"] = json.dumps(redact_json(failed))
    return cube.assign_attrs(source_items=sources)
