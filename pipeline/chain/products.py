"""The derived products of a request, each made one tile at a time from the store's cube.

A product is a group of the store beside the cube's (group ``cube``): ``composite``,
``embeddings``, ``uncertainty``, ``video``. :data:`PRODUCTS` registers, per product, what it is
made from and how a tile of it is made from the tiles of its inputs; every maker returns the
tile's product as a Dataset on the product's grid (``cell`` cube pixels per product cell) with
a boolean ``computed``. Nothing here holds more than a tile, and a tile's products stay on the
workers (persisted) until they are written: the computation runs as Dask tasks on the active
scheduler (composite chunks, embedding chip batches, uncertainty blocks, video chunks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from pipeline.model import CubeRequest, required

log = logging.getLogger(__name__)

#: per-tile statistics that a product's tile cannot give for the whole grid (left out of the product)
TILE_STATISTICS = ("bin_valid_fraction",)


@dataclass(frozen=True)
class Tile:
    """A tile of the cube grid: rows ``y`` and columns ``x`` (pixel indices, end exclusive)."""

    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def id(self) -> str:
        return f"y{self.y[0]:05d}-{self.y[1]:05d}_x{self.x[0]:05d}-{self.x[1]:05d}"

    def region(self, cell: int = 1, dims: tuple[str, str] = ("y", "x")) -> dict[str, slice]:
        """The tile's region on a grid of ``cell`` x ``cell`` pixel cells (a partial last cell counts)."""
        (y0, y1), (x0, x1) = self.y, self.x
        return {dims[0]: slice(y0 // cell, math.ceil(y1 / cell)), dims[1]: slice(x0 // cell, math.ceil(x1 / cell))}

    def seed(self) -> int:
        """A seed for the tile's random draws (Monte-Carlo masks): the same on every run, different per tile."""
        return int.from_bytes(hashlib.sha256(self.id.encode()).digest()[:4], "little")


def tiles_of(ny: int, nx: int, tile_px: int) -> list[Tile]:
    """The tiles covering a ``ny`` x ``nx`` grid, ``tile_px`` pixels a side (the last ones partial)."""
    return [
        Tile((y, min(y + tile_px, ny)), (x, min(x + tile_px, nx)))
        for y in range(0, ny, tile_px)
        for x in range(0, nx, tile_px)
    ]


@dataclass
class Context:
    """What the makers need beyond the tiles: the request and what was resolved from it once per run
    (the video plan, the loaded artefacts, the embedding device)."""

    request: CubeRequest
    video_plan: Any = None
    uncertainty: Any = None
    head: Any = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Product:
    """One derived product: its group name, the product it is made from, its cell (cube pixels per cell,
    from the context) and its maker ``(context, inputs by product name, tile) -> tile Dataset``."""

    name: str
    source: Callable[[CubeRequest], str]
    make: Callable[[Context, dict[str, xr.Dataset], Tile], xr.Dataset]
    section: Callable[[CubeRequest], Any]
    spatial_dims: tuple[str, str] = ("y", "x")


def _computed(ds: xr.Dataset, dims: tuple[str, str], value: bool = True) -> xr.Dataset:
    """``ds`` with the boolean ``computed`` on its spatial dims."""
    shape = (ds.sizes[dims[0]], ds.sizes[dims[1]])
    return ds.assign(computed=(dims, np.full(shape, value)))


# ------------------------------------------------------------------------------------------ composite


def make_composite(ctx: Context, inputs: dict[str, xr.Dataset], tile: Tile) -> xr.Dataset:
    """The tile's regular-bin composites (:func:`pipeline.cube.composite`), computed and kept on the workers."""
    from pipeline.cube.compositing import composite

    section = required(ctx.request.composite, "composite")
    out = composite(inputs["cube"], section.freq, section.method)
    out = out.drop_vars([v for v in TILE_STATISTICS if v in out.variables]).persist()
    return _computed(out, ("y", "x"))


# ------------------------------------------------------------------------------------------ embeddings


def make_embeddings(ctx: Context, inputs: dict[str, xr.Dataset], tile: Tile) -> xr.Dataset:
    """The tile's embeddings of its input product (pooled, or per time step), plus the head's maps if any."""
    from pipeline.embeddings.engine import embed_cube

    section = required(ctx.request.embed, "embed")
    ds = inputs[section.input]

    def embed(part: xr.Dataset) -> xr.DataArray:
        return embed_cube(
            part, section.model, section.weights, device=ctx.device, chip_size=section.chip_size
        ).persist()

    if section.temporal == "per-time-step":
        steps = [embed(ds.isel(time=[t])) for t in range(ds.sizes["time"])]
        emb = xr.concat(steps, dim="time").assign_coords(time=ds["time"].values)
    else:
        emb = embed(ds)
    out = emb.to_dataset(name="embeddings")
    out.attrs = dict(emb.attrs)
    if ctx.head is not None:
        out = out.merge(ctx.head.predict(emb))
    y_dim, x_dim = (str(d) for d in emb.dims if d not in ("time", "dim"))  # (y, x) or (patch_y, patch_x)
    return _computed(out, (y_dim, x_dim))


# ------------------------------------------------------------------------------------------ uncertainty

#: pixels per side of one uncertainty task
UNCERTAINTY_BLOCK = 128


def make_uncertainty(ctx: Context, inputs: dict[str, xr.Dataset], tile: Tile) -> xr.Dataset:
    """The artefact's six maps for the tile, one Dask task per block (the artefact loaded once per worker)."""
    artefact = ctx.uncertainty
    ds = model_inputs(artefact, inputs[artefact.card["inputs"]["product"]])
    section = required(ctx.request.uncertainty, "uncertainty")
    blocks = [
        (y, x) for y in range(0, ds.sizes["y"], UNCERTAINTY_BLOCK) for x in range(0, ds.sizes["x"], UNCERTAINTY_BLOCK)
    ]
    tasks = [
        dask.delayed(_predict_block, pure=True)(
            str(section.model),
            artefact.sha256,
            ds.isel(y=slice(y, y + UNCERTAINTY_BLOCK), x=slice(x, x + UNCERTAINTY_BLOCK)),  # read by the task
            section.mc_samples,
            section.coverage,
            tile.seed() + i,
        )
        for i, (y, x) in enumerate(blocks)
    ]
    parts = dask.compute(*tasks)
    rows: dict[int, list[xr.Dataset]] = {}
    for (y, _), part in zip(blocks, parts, strict=True):
        rows.setdefault(y, []).append(part)
    out = xr.concat([xr.concat(r, dim="x") for _, r in sorted(rows.items())], dim="y")
    if section.target and artefact.target != section.target:
        out = out.rename({v: str(v).replace(artefact.target, section.target, 1) for v in out.data_vars})
    return _computed(out, ("y", "x"))


def model_inputs(artefact: Any, ds: xr.Dataset) -> xr.Dataset:
    """What of ``ds`` the artefact reads (lazily): its variables, ``valid``, and its window of time steps (the
    last ``n_steps``), so a task moves no more than its block of those."""
    from pipeline.uncertainty.cube import window_indices

    artefact.check_inputs(ds)  # the one-line error, before any selection could fail less clearly
    variables = list(artefact.card["inputs"]["variables"])
    ds = ds[variables + (["valid"] if "valid" in ds.data_vars else [])]
    if any("time" in ds[v].dims for v in variables):
        ds = ds.isel(time=window_indices(ds["time"].values, None, artefact.model.n_steps or ds.sizes["time"]))
    return ds


def _predict_block(
    model: str, sha256: str, ds: xr.Dataset, mc_samples: int | None, coverage: float | None, seed: int
) -> xr.Dataset:
    from pipeline.uncertainty.artefact import predict_tile

    return predict_tile(_artefact(model, sha256), ds, mc_samples=mc_samples, coverage=coverage, seed=seed)


def _artefact(path: str, sha256: str) -> Any:
    """The artefact at ``path`` (checked to be the one planned, by its sha256), loaded once per process."""
    from pipeline.uncertainty.artefact import load_artefact

    cached = _ARTEFACTS.get((path, sha256))
    if cached is None:
        cached = _ARTEFACTS[(path, sha256)] = load_artefact(path)
        if cached.sha256 != sha256:
            raise ValueError(f"artefact {path} changed while the run was going on (sha256 {cached.sha256[:12]}...)")
    return cached


_ARTEFACTS: dict[tuple[str, str], Any] = {}


# ------------------------------------------------------------------------------------------ video


def make_video(ctx: Context, inputs: dict[str, xr.Dataset], tile: Tile) -> xr.Dataset:
    """The tile's cube as the video product's dataset (lazy: its chunks are coded as they are written)."""
    from pipeline.compression.stage import video_dataset

    out, _ = video_dataset(inputs["cube"], ctx.video_plan)
    return _computed(out, ("y", "x"))


#: the derived products, in the order they are made; adding one is a maker and one line here
PRODUCTS: dict[str, Product] = {
    p.name: p
    for p in (
        Product("composite", lambda r: "cube", make_composite, lambda r: r.composite),
        Product("embeddings", lambda r: required(r.embed, "embed").input, make_embeddings, lambda r: r.embed),
        Product("uncertainty", lambda r: _uncertainty_source(r), make_uncertainty, lambda r: r.uncertainty),
        Product("video", lambda r: "cube", make_video, lambda r: r.compress),
    )
}


def _uncertainty_source(request: CubeRequest) -> str:
    from pipeline.uncertainty.artefact import load_artefact

    return load_artefact(required(request.uncertainty, "uncertainty").model).card["inputs"]["product"]


def section_json(request: CubeRequest, name: str) -> str:
    """The request section behind a product, as canonical JSON (a product group records it; a change remakes it)."""
    section = PRODUCTS[name].section(request)
    return json.dumps(section.model_dump(mode="json") if section is not None else None, sort_keys=True)


# ------------------------------------------------------------------------------------------ templates


def spatial_chunk(n_cells: int, cap: int = 256) -> int:
    """The largest divisor of ``n_cells`` (a tile's cells along an axis) not above ``cap``: Zarr chunks that
    never straddle two tiles, so tiles are written without touching each other's chunks."""
    return max(d for d in range(1, min(n_cells, cap) + 1) if n_cells % d == 0)


def grid_coords(cube: xr.Dataset, cell: int, dim: str) -> np.ndarray:
    """Centres of ``cell``-pixel cells along the cube's ``y`` or ``x`` axis (pixel centres for ``cell`` 1)."""
    centres = cube[dim].values.astype(np.float64)
    if cell == 1:
        return centres
    step = centres[1] - centres[0] if centres.size > 1 else 1.0
    n = math.ceil(centres.size / cell)
    return centres[0] + (np.arange(n) * cell + (cell - 1) / 2) * step


def cell_of(tile_ds: xr.Dataset, tile: Tile, dims: tuple[str, str]) -> int:
    """Cube pixels per product cell, from a tile's product (1 for pixel products, the patch size for patch embeddings)."""
    return max(1, round((tile.y[1] - tile.y[0]) / tile_ds.sizes[dims[0]]))


def template(
    tile_ds: xr.Dataset, cube: xr.Dataset, tile_px: int, cell: int, dims: tuple[str, str]
) -> tuple[xr.Dataset, dict]:
    """The whole-grid product (lazy fill values) shaped like a tile's product ``tile_ds``, and its Zarr encoding.

    Spatial dims take the grid's cell centres; chunks never straddle tiles (:func:`spatial_chunk`).
    """
    coords = {dims[0]: grid_coords(cube, cell, "y"), dims[1]: grid_coords(cube, cell, "x")}
    tile_cells = max(1, tile_px // cell)
    chunk = spatial_chunk(tile_cells)
    out = {}
    encoding: dict[Hashable, dict] = {}
    for name, var in tile_ds.data_vars.items():
        shape = tuple(coords[d].size if d in coords else var.sizes[d] for d in var.dims)
        chunks = tuple(chunk if d in coords else var.sizes[d] for d in var.dims)
        fill = np.nan if np.issubdtype(var.dtype, np.floating) else (False if var.dtype == bool else 0)
        out[name] = xr.DataArray(da.full(shape, fill, dtype=var.dtype, chunks=chunks), dims=var.dims, attrs=var.attrs)
        encoding[name] = {"chunks": chunks, "fill_value": fill if var.dtype != bool else False}
    non_spatial = {c: v for c, v in tile_ds.coords.items() if not set(v.dims) & set(dims)}
    ds = xr.Dataset(out, coords={**non_spatial, **coords}, attrs=tile_ds.attrs)
    if "spatial_ref" in cube.coords:
        ds = ds.assign_coords(spatial_ref=cube["spatial_ref"])
    return ds, encoding


def region_part(tile_ds: xr.Dataset, dims: tuple[str, str], group: xr.Dataset | None = None) -> xr.Dataset:
    """What a tile writes into its region: the variables on the spatial dims, no coordinates; Dask chunks as
    the group's Zarr chunks (one task writes each chunk: tiles start on chunk boundaries)."""
    spatial = [v for v, var in tile_ds.data_vars.items() if set(dims) <= set(var.dims)]
    part = tile_ds[spatial]
    part = part.drop_vars([c for c in part.coords])
    if group is None or not part.chunks:
        return part
    for name in spatial:
        zarr_chunks = group[name].encoding.get("chunks") or group[name].encoding.get("preferred_chunks")
        if zarr_chunks is not None and part[name].chunks is not None:
            part[name] = part[name].chunk(dict(zip(group[name].dims, (int(c) for c in zarr_chunks), strict=True)))
    return part


def not_computed(group: xr.Dataset, tile: Tile, cell: int, dims: tuple[str, str]) -> xr.Dataset:
    """A tile of ``group`` marked "not computed": fill values (NaN, not zero) and ``computed`` False."""
    region = tile.region(cell, dims)
    part = group.isel(region).copy(deep=True).load()
    for name, var in part.data_vars.items():
        if np.issubdtype(var.dtype, np.floating):
            part[name] = var.fillna(np.nan) * np.nan
        elif name == "computed":
            part[name] = var & False
    return part
