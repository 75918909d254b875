"""Check a request before any work: every mistake that can be known from the request is one line, at once.

:func:`preflight` runs before the search (no network, no cluster); :func:`check_products` runs it
again for the derived products once the search said how many time steps the cube will have.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.catalog.config import load_catalog
from pipeline.model import CubeRequest, SearchResult, required


def request_bands(request: CubeRequest) -> list[str]:
    """The cube's bands: the request's, checked against every sensor's product, or those all of them share."""
    from pipeline.cube.assemble import bands_of_profiles
    from pipeline.sensors import load_profile

    catalog = load_catalog(request.catalog)
    return bands_of_profiles(request, [load_profile(catalog.profile_for(s)) for s in request.sensors])


def preflight(request: CubeRequest, *, resume: bool = False) -> None:
    """Check everything about ``request`` that can be checked without searching, or raise one line.

    The catalog and its collection for each sensor, the bands each sensor's product offers,
    the mask policy and resampling, the composite frequency, the output grid (its CRS and
    size), the output path (free, or an eocube store to replace with ``overwrite`` or to
    continue with ``resume``; writable, with space), and the derived products: the encoder's
    weights, the artefacts and what they need of the request (:func:`check_products`).
    """
    from pipeline.cube.assemble import mask_policy
    from pipeline.cube.compositing import bins
    from pipeline.cube.grid import request_geobox
    from pipeline.cube.load import resampling_for
    from pipeline.sensors import load_profile
    from pipeline.store.paths import check_output

    catalog = load_catalog(request.catalog)
    bands = request_bands(request)
    profiles = [load_profile(catalog.profile_for(sensor)) for sensor in request.sensors]
    for profile in profiles:
        resampling_for(profile, bands, request.resampling)
    known = {"reflectance", "qa", *bands, *(q.asset for p in profiles for q in p.qa)}
    unknown = sorted(set(request.resampling) - known)
    if unknown:
        raise ValueError(
            f"resampling names {unknown}, which is not a variable kind (reflectance, qa), a band "
            f"({', '.join(bands)}) or a QA asset of the requested sensors"
        )
    mask_policy(request)
    if request.composite is not None:
        bins(np.array([np.datetime64(request.start, "ns")]), request.composite.freq)
    request_geobox(request)
    check_output(request.output, overwrite=request.overwrite, resume=resume)
    check_products(request)


def cube_steps(found: SearchResult) -> int:
    """How many time steps the cube of ``found`` has: one per sensor and solar day."""
    from pipeline.catalog.search import group_by_solar_day

    return sum(len(group_by_solar_day(s.items)) for s in found.values())


def composite_steps(request: CubeRequest) -> int:
    """How many bins the composite of the request's period has."""
    from pipeline.cube.compositing import bins

    days = pd.date_range(request.start, request.end, freq="D").values
    return len(bins(days, required(request.composite, "composite").freq)[0])


def check_products(request: CubeRequest, found: SearchResult | None = None) -> None:
    """Raise one line unless the request's derived products can be made: the encoder's weights are there,
    and each artefact's inputs (product, variables, time steps, embedding model and weights) are what the
    request makes. With ``found`` (after the search) the cube's time steps are checked too."""
    if request.compress is not None and request.compress.qp is not None:
        from pipeline.compression.video import check_qp

        check_qp(request.compress.qp)
    embedding = encoder_identity(request) if request.embed is not None else None
    steps = {
        "cube": cube_steps(found) if found is not None else None,
        "composite": composite_steps(request) if request.composite is not None else None,
    }
    if request.uncertainty is not None:
        from pipeline.uncertainty.artefact import check_inputs, load_artefact

        artefact = request.uncertainty.model
        card = load_artefact(artefact).card
        product = card["inputs"]["product"]
        if product not in ("cube", *request.products()):
            raise ValueError(
                f"artefact {artefact} needs the {product!r} product, which the request does not make: add its section"
            )
        check_inputs(card, skeleton(request, product, steps.get(product), embedding))
    if request.embed is not None and request.embed.head is not None:
        from pipeline.uncertainty.head import load_head

        load_head(request.embed.head).check_inputs(skeleton(request, "embeddings", None, embedding)["embeddings"])


def encoder_identity(request: CubeRequest) -> dict[str, object]:
    """The request's encoder: its name, its weights' sha256 and embedding size (the weights must be found)."""
    from pipeline.embeddings.registry import load_encoder

    embed = required(request.embed, "embed")
    _, info = load_encoder(embed.model, embed.weights, "cpu")
    return {"model": info.name, "weights_sha256": info.weights_sha256, "dim": info.embed_dim}


def skeleton(request: CubeRequest, product: str, n_steps: int | None, embedding: dict | None) -> xr.Dataset:
    """A one-pixel stand-in of what the request makes as ``product`` (its variables, dims and, where known,
    time steps) for checking an artefact against before anything is read."""
    steps = n_steps or 10_000  # unknown until the search: not the thing checked then
    if product == "embeddings":
        if embedding is None:
            raise ValueError("the embeddings stand-in needs the encoder's identity (encoder_identity)")
        per_step = required(request.embed, "embed").temporal == "per-time-step"
        dims = ("time", "y", "x", "dim") if per_step else ("y", "x", "dim")
        shape = tuple({"time": steps, "dim": int(embedding["dim"])}.get(d, 1) for d in dims)
        var = xr.DataArray(
            np.zeros(shape, np.float32),
            dims=dims,
            attrs={"model": embedding["model"], "weights_sha256": embedding["weights_sha256"]},
        )
        return xr.Dataset({"embeddings": var})
    names = list(request_bands(request)) + ["valid"]
    if product == "composite":
        names += ["clear_count", "valid_fraction"]
    data = {n: (("time", "y", "x"), np.zeros((steps, 1, 1), np.float32)) for n in names}
    return xr.Dataset(data, coords={"time": pd.date_range("2000-01-01", periods=steps, freq="D").values})
