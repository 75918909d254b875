"""Check a request before any search: every mistake that can be known from the request is one line, at once."""
from __future__ import annotations

import numpy as np

from pipeline.catalog.config import load_catalog
from pipeline.model import CubeRequest


def preflight(request: CubeRequest, *, resume: bool = False) -> None:
    """Check everything about ``request`` that can be checked without searching, or raise one line.

    The catalog and its collection for each sensor, the bands each sensor's product offers,
    the mask policy and resampling, the composite frequency, the output grid (its CRS and
    size) and the output path (free, or an eocube store to replace with ``overwrite`` or to
    continue with ``resume``; writable, with space). Cheap: no network, no cluster.
    """
    from pipeline.cube.assemble import bands_of_profiles, mask_policy
    from pipeline.cube.compositing import bins
    from pipeline.cube.grid import request_geobox
    from pipeline.cube.load import resampling_for
    from pipeline.sensors import load_profile
    from pipeline.store.paths import check_output

    catalog = load_catalog(request.catalog)
    profiles = [load_profile(catalog.profile_for(sensor)) for sensor in request.sensors]
    bands = bands_of_profiles(request, profiles)
    for profile in profiles:
        resampling_for(profile, bands, request.resampling)
    mask_policy(request)
    if request.composite is not None:
        bins(np.array([np.datetime64(request.start, "ns")]), request.composite.freq)
    request_geobox(request)
    check_output(request.output, overwrite=request.overwrite, resume=resume)
