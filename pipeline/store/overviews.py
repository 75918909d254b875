"""Multiscale overviews of a store, for quick display.

Level ``k`` averages ``2**k x 2**k`` pixel blocks (NaN-aware mean of reflectance; the
fraction of valid pixels for ``valid``) and is written as the group ``overviews/<2**k>x``
of the store with its own CF grid mapping. The root attribute ``multiscales`` lists the
levels (GeoZarr multiscales convention: ``layout`` entries with ``asset``, ``derived_from``
and the scale ``transform``), so viewers pick a level without scanning the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from pipeline.store.cf import annotate_cf, encodings
from pipeline.store.open import as_float32_reflectance


def coarsen_cube(ds: xr.Dataset, factor: int) -> xr.Dataset:
    """The cube averaged over ``factor x factor`` pixel blocks (edges padded with NaN).

    Reflectance: NaN-aware block mean. ``valid`` (bool): fraction of valid pixels, float32.
    Pixel-centre coordinates become block centres; the CRS is kept.
    """
    if factor < 2:
        raise ValueError(f"overview factor must be >= 2, got {factor}")
    data = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c not in ("sensor", "spatial_ref")])
    if "valid" in data:
        data["valid"] = data["valid"].astype(np.float32)
    res_x = float(ds.x[1] - ds.x[0]) if ds.sizes["x"] > 1 else None
    res_y = float(ds.y[1] - ds.y[0]) if ds.sizes["y"] > 1 else None
    out = data.coarsen(y=factor, x=factor, boundary="pad").mean(keep_attrs=True)  # NaN-skipping for floats
    # padded blocks: place centres on the regular coarse grid, not the mean of partial blocks
    if res_x is not None:
        out = out.assign_coords(
            x=float(ds.x[0]) + res_x * (factor - 1) / 2 + res_x * factor * np.arange(out.sizes["x"])
        )
    if res_y is not None:
        out = out.assign_coords(
            y=float(ds.y[0]) + res_y * (factor - 1) / 2 + res_y * factor * np.arange(out.sizes["y"])
        )
    for v in out.data_vars:
        out[v] = out[v].astype(np.float32)
    if "valid" in out:
        out["valid"].attrs.update(long_name="fraction of valid pixels in the block", units="1")
    return annotate_cf(out)


def multiscales_attr(levels: int) -> dict:
    """The root ``multiscales`` attribute for ``levels`` overview levels below the full resolution."""
    layout = [{"asset": ".", "transform": {"scale": [1.0, 1.0]}}]
    for k in range(1, levels + 1):
        f = 2**k
        layout.append(
            {
                "asset": f"overviews/{f}x",
                "derived_from": layout[-1]["asset"],
                "transform": {"scale": [float(f), float(f)]},
                "resampling_method": "mean",
            }
        )
    return {"multiscales": {"layout": layout, "resampling_method": "mean"}}


def write_overviews(path: Path | str, levels: int, chunks: dict[str, int] | None = None) -> list[str]:
    """Write ``levels`` overview groups into the store at ``path``; returns their group paths."""
    if levels < 1:
        raise ValueError(f"overview levels must be >= 1, got {levels}")
    ds = as_float32_reflectance(xr.open_zarr(path, consolidated=False))
    chunks = chunks or {"time": 1, "y": 256, "x": 256}
    written = []
    for k in range(1, levels + 1):
        f = 2**k
        if min(ds.sizes["y"], ds.sizes["x"]) < f:
            raise ValueError(f"overview level {k} (factor {f}) is larger than the {ds.sizes['y']}x{ds.sizes['x']} grid")
        ov = coarsen_cube(ds, f)
        ov = ov.chunk({d: min(chunks.get(str(d), n), n) for d, n in ov.sizes.items()})
        group = f"overviews/{f}x"
        ov.to_zarr(path, group=group, mode="w", zarr_format=3, consolidated=False, encoding=encodings(ov, chunks))
        written.append(group)
    root = zarr.open_group(str(path), mode="r+", zarr_format=3)
    root.attrs.update(multiscales_attr(levels))
    return written
