"""Stack every requested sensor onto one grid and one time axis.

The multi-sensor cube has one float32 reflectance variable per harmonised common band
(dims ``time, y, x``), a ``valid`` mask and a ``sensor`` coordinate along ``time`` telling
which sensor each time step came from. Time steps are sorted; two sensors observing
on the same day remain separate steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.catalog.search import SensorItems
from pipeline.cube.load import load_sensor
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


def build_cube(request: CubeRequest, found: dict[str, SensorItems], geobox: GeoBox,
               bands: Sequence[str], patch_url=None) -> xr.Dataset:
    """The lazy multi-sensor cube of a request (nothing is read until computed)."""
    policy = mask_policy(request)
    parts = [
        load_sensor(s, geobox, bands, policy=policy, chunks=request.chunks, resampling=request.resampling,
                    patch_url=patch_url)
        for s in found.values() if s.items
    ]
    sources = {s.sensor: [i.id for i in s.items] for s in found.values()}
    cube = xr.concat(parts, dim="time", combine_attrs="drop").sortby("time")
    cube = cube.chunk({"time": request.chunks.get("time", 1)})
    cube.attrs["eocube:mask_policy"] = policy.model_dump_json()
    cube.attrs["eocube:bands"] = list(bands)
    return cube.assign_attrs(source_items=sources)
