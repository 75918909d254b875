"""Stack every requested sensor onto one grid and one time axis.

The multi-sensor cube has one float32 reflectance variable per harmonised common band
(dims ``time, y, x``; with ``storage="scaled-int"`` the integer DN on one CF-packed grid
per band, see :mod:`pipeline.cube.packing`), a ``valid`` mask and a ``sensor`` coordinate along ``time`` telling
which sensor each time step came from. Time steps are sorted; two sensors observing
on the same day remain separate steps. Optionally the cube is composited into regular
time bins (:mod:`pipeline.cube.compositing`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.catalog.search import SensorItems
from pipeline.cube.compositing import composite
from pipeline.cube.gdal_env import configure_remote_reads
from pipeline.cube.load import asset_table, load_sensor
from pipeline.cube.packing import packed_grids
from pipeline.cube.probe import probe_items, report_failures
from pipeline.model import CubeRequest, RequestError
from pipeline.sensors import MaskPolicy, common_bands, load_profile


def mask_policy(request: CubeRequest) -> MaskPolicy:
    """The request's mask policy, filled in with the defaults of :class:`MaskPolicy`."""
    overrides = {k: v for k, v in request.mask.model_dump().items() if v is not None}
    return MaskPolicy(**overrides)


def cube_bands(request: CubeRequest, found: dict[str, SensorItems]) -> list[str]:
    """Bands of the cube: the request's, or those every sensor with items provides."""
    profiles = [load_profile(s.profile) for s in found.values() if s.items]
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


def request_cube(request: CubeRequest, found: dict[str, SensorItems]) -> xr.Dataset:
    """The lazy cube of a request on its grid, read with its catalog's signing.

    The one way every entry point (``run``, backfills, updates, flows) builds a request's
    cube, so all of them read signed catalogs signed. ``attrs["source_items"]`` lists the
    items used per sensor (for provenance).
    """
    from pipeline.catalog.config import load_catalog
    from pipeline.catalog.signing import make_signer
    from pipeline.cube.grid import request_geobox

    catalog = load_catalog(request.catalog)
    signer = make_signer(catalog.signing, catalog.signing_url)
    return build_cube(request, found, request_geobox(request), cube_bands(request, found), patch_url=signer)


def build_cube(request: CubeRequest, found: dict[str, SensorItems], geobox: GeoBox,
               bands: Sequence[str], patch_url=None) -> xr.Dataset:
    """The lazy multi-sensor cube of a request (nothing is read until computed).

    Every asset is probed first (:mod:`pipeline.cube.probe`); items with an unreadable
    asset are left out, warned about and listed in ``attrs["eocube:failed_items"]``
    (JSON ``{item_id: {asset: reason}}``). Reads use ``request.engine`` with the remote-read
    GDAL options; ``request.composite`` turns the cube into regular-bin composites.
    """
    policy = mask_policy(request)
    configure_remote_reads()
    usable, failed = {}, {}
    for key, s in found.items():
        if not s.items:
            continue
        profile = load_profile(s.profile)
        broken = probe_items(s.items, list(asset_table(profile, bands)), patch_url)
        report_failures(broken, s.items, patch_url)
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
        load_sensor(s, geobox, bands, policy=policy, chunks=request.chunks, resampling=request.resampling,
                    patch_url=patch_url, engine=request.engine, packing=packing)
        for s in usable.values()
    ]
    sources = {s.sensor: [i.id for i in s.items] for s in usable.values()}
    cube = parts[0].drop_attrs(deep=False) if len(parts) == 1 else xr.concat(parts, dim="time", combine_attrs="drop")
    if not cube.indexes["time"].is_monotonic_increasing:
        cube = cube.sortby("time")
    if request.composite is not None:
        cube = composite(cube, request.composite.freq, request.composite.method)
    time_chunk = request.chunks.get("time", 1)
    if any(c != time_chunk for c in cube.chunksizes["time"][:-1]):
        cube = cube.chunk({"time": time_chunk})
    for b, grid in (packing or {}).items():
        cube[b].attrs.update(grid.attrs())
    cube.attrs["eocube:storage"] = request.storage
    cube.attrs["eocube:mask_policy"] = policy.model_dump_json()
    cube.attrs["eocube:bands"] = list(bands)
    cube.attrs["eocube:engine"] = request.engine
    cube.attrs["eocube:failed_items"] = json.dumps(failed)
    return cube.assign_attrs(source_items=sources)
