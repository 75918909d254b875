"""Units: a tile of the grid made in every derived product the request names, and committed at once.

A unit's record (``eocube-manifest/units/<tile>.json``, or the metadata of its one Icechunk commit)
is written after the tile's regions of every product, so a unit is complete in every product or
absent. It records the tile's *cube version* (a hash of its committed cube slices: their items
and failed reads), the request section of each product and what became of each product. The
next run makes a tile again when its cube changed (new dates, items published late, reads that
failed and now succeed), when a product's section changed, or when a product was "not computed"
(its task failed after its retries: its cells hold NaN and ``computed`` False, not zeros).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.chain.concurrency import side_by_side
from pipeline.chain.context import resolve_context
from pipeline.chain.products import (
    PRODUCTS,
    Context,
    Tile,
    cell_of,
    not_computed,
    region_part,
    section_json,
    template,
    tiles_of,
)
from pipeline.cube.reads import reason_of
from pipeline.model import CubeRequest, Progress, required
from pipeline.redaction import redact_json
from pipeline.store.engines import Engine

log = logging.getLogger(__name__)

#: attempts at a tile's product before it is marked "not computed" (retried with a growing pause)
ATTEMPTS = 3
RETRY_PAUSE_S = 1.0
COMPUTED = "computed"

T = TypeVar("T")


def retried(make: Callable[[], T], attempts: int = ATTEMPTS, what: str = "") -> T:
    """``make()``, tried up to ``attempts`` times (pausing :data:`RETRY_PAUSE_S` x 2^k between tries)."""
    for attempt in range(attempts):
        try:
            return make()
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            log.warning("%s failed (%s); trying again", what, reason_of(exc))
            time.sleep(RETRY_PAUSE_S * 2**attempt)
    raise AssertionError("unreachable")


def _tile_records(records: Iterable[dict], tile: Tile) -> list[dict]:
    return [r for r in records if tuple(r["y"]) == tile.y and tuple(r["x"]) == tile.x]


def cube_version(records: Iterable[dict], tile: Tile) -> str:
    """A hash of the tile's committed cube slices: ids, items and failed reads (changes when its cube does)."""
    key = sorted(
        (r["slice"], json.dumps(r.get("sources", {}), sort_keys=True), json.dumps(r.get("failed", {}), sort_keys=True))
        for r in _tile_records(records, tile)
    )
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def tile_failed_items(records: Iterable[dict], tile: Tile) -> dict[str, dict[str, str]]:
    """The items whose reads failed in the tile's cube slices (their pixels masked in every product made from them)."""
    out: dict[str, dict[str, str]] = {}
    for record in _tile_records(records, tile):
        for item, assets in record.get("failed", {}).items():
            out.setdefault(item, {}).update(assets)
    return out


def pending_units(request: CubeRequest, engine: Engine, tiles: list[Tile], slices: list[dict]) -> list[Tile]:
    """The tiles to make (again): no record, another cube version, another product section, a product not made."""
    wanted = request.products()
    if not wanted:
        return []
    sections = {name: section_json(request, name) for name in wanted}
    done = engine.units()
    out = []
    for tile in tiles:
        record = done.get(tile.id)
        if (
            record is None
            or record.get("cube_version") != cube_version(slices, tile)
            or any(record.get("products", {}).get(p) != COMPUTED for p in wanted)
            or any(record.get("sections", {}).get(p) != sections[p] for p in wanted)
        ):
            out.append(tile)
    return out


def stale_groups(request: CubeRequest, engine: Engine, cube: xr.Dataset) -> list[str]:
    """Product groups to remake from scratch: their request section changed, or their time axis no longer
    follows the cube's (dates appended or inserted)."""
    stale = []
    for name in request.products():
        group = engine.open_group(name)
        if group is None:
            continue
        if group.attrs.get("eocube:section") != section_json(request, name):
            stale.append(name)
        elif "time" in group.dims and name != "composite" and group.sizes["time"] != cube.sizes["time"]:
            stale.append(name)
        elif name == "composite" and _composite_bins(request, cube) != [str(t) for t in group["time"].values]:
            stale.append(name)
    return stale


def _composite_bins(request: CubeRequest, cube: xr.Dataset) -> list[str]:
    from pipeline.cube.compositing import bins

    starts, _, _ = bins(cube["time"].values, required(request.composite, "composite").freq)
    return [str(np.datetime64(t, "ns")) for t in starts.values]


def _create_group(
    engine: Engine, name: str, ctx: Context, made: xr.Dataset, cube: xr.Dataset, tile: Tile, tile_px: int
) -> None:
    """Create the product group ``name`` shaped like a tile of it (the video product from the whole cube)."""
    dims = PRODUCTS[name].spatial_dims if "y" in made.dims else ("patch_y", "patch_x")
    cell = cell_of(made, tile, dims)
    if name == "video":
        from pipeline.compression.stage import video_dataset

        whole, encoding = video_dataset(cube, ctx.video_plan)
        chunks = ctx.video_plan.chunks[1:]
        flags = da.zeros((cube.sizes["y"], cube.sizes["x"]), dtype=bool, chunks=chunks)
        whole = whole.assign(computed=(("y", "x"), flags))
        encoding["computed"] = {"chunks": chunks}
    else:
        whole, encoding = template(made, cube, tile_px, cell, dims)
    attrs = {
        **whole.attrs,
        "eocube:product": name,
        "eocube:section": section_json(ctx.request, name),
        "eocube:cell": cell,
        "eocube:spatial_dims": json.dumps(dims),
        **artefact_attrs(ctx, name),
    }
    for var in whole.variables.values():
        var.encoding = {}
    engine.create_group(name, whole.assign_attrs(attrs), encoding)


def artefact_attrs(ctx: Context, name: str) -> dict[str, str]:
    """The artefact a product was made with, for its group's provenance (its card's summary and sha256)."""
    if name == "uncertainty" and ctx.uncertainty is not None:
        from pipeline.uncertainty.artefact import artefact_summary

        return {
            "eocube:artefact": json.dumps(
                {
                    "path": str(required(ctx.request.uncertainty, "uncertainty").model),
                    **artefact_summary(ctx.uncertainty.card),
                },
                default=str,
            )
        }
    if name == "video" and ctx.video_plan is not None:
        plan = ctx.video_plan
        return {
            "eocube:video": json.dumps(
                {
                    "mode": plan.params.mode,
                    "qp": plan.params.qp if plan.params.mode == "lossy" else None,
                    "sample_psnr_db": None if plan.sample_psnr is None else round(plan.sample_psnr, 2),
                    "psnr_peak": plan.peak,
                    "value_range": list(plan.params.value_range),
                }
            )
        }
    if name == "embeddings" and ctx.head is not None:
        return {
            "eocube:artefact": json.dumps(
                {"path": str(required(ctx.request.embed, "embed").head), **ctx.head.summary()}, default=str
            )
        }
    return {}


def compute_products(ctx: Context, cube: xr.Dataset, tile: Tile) -> tuple[dict[str, xr.Dataset | None], dict[str, str]]:
    """Every product of one tile, in the request's order (each retried; one that still fails is None, and
    what depends on it is not made): the products, kept on the workers, and what became of each."""
    inputs: dict[str, xr.Dataset] = {"cube": cube.isel(y=slice(*tile.y), x=slice(*tile.x))}
    status: dict[str, str] = {"cube": COMPUTED}
    made: dict[str, xr.Dataset | None] = {}
    for name in ctx.request.products():
        product = PRODUCTS[name]
        source = product.source(ctx.request)
        made[name] = None
        if status.get(source) != COMPUTED:
            status[name] = f"not computed: its input {source} was not computed"
            continue
        try:
            made[name] = inputs[name] = retried(
                partial(product.make, ctx, inputs, tile), what=f"{name} of tile {tile.id}"
            )
            status[name] = COMPUTED
        except Exception as exc:  # one tile's failure must not sink the run: recorded, made again next run
            status[name] = f"not computed: {reason_of(exc)}"
            log.error("tile %s: %s not computed after %d attempts: %s", tile.id, name, ATTEMPTS, reason_of(exc))
    return made, {k: v for k, v in status.items() if k != "cube"}


def product_groups(
    ctx: Context, engine: Engine, cube: xr.Dataset, tile: Tile, made: dict[str, xr.Dataset | None], tile_px: int
) -> dict[str, xr.Dataset]:
    """The store's group of each product, those missing created shaped like this tile's products (a product
    not made and without a group has none yet: the next run makes the group with this tile)."""
    groups = {}
    for name, product in made.items():
        group = engine.open_group(name)
        if group is None and product is not None:
            _create_group(engine, name, ctx, product, cube, tile, tile_px)
            group = engine.open_group(name)
        if group is not None:
            groups[name] = group
    return groups


def commit_unit(
    ctx: Context,
    engine: Engine,
    tile: Tile,
    made: dict[str, xr.Dataset | None],
    status: dict[str, str],
    groups: dict[str, xr.Dataset],
    slices: list[dict],
) -> dict:
    """Write the tile's region of every product group (NaN and ``computed`` False where a product was not
    made) and the unit's record, in one unit; returns the record."""
    parts = []
    for name, group in groups.items():
        dims = tuple(json.loads(group.attrs["eocube:spatial_dims"]))
        cell = int(group.attrs["eocube:cell"])
        product = made[name]
        if product is None:
            product = not_computed(group, tile, cell, dims)
        parts.append((name, region_part(product, dims, group), tile.region(cell, dims)))
    record = {
        "unit": tile.id,
        "y": list(tile.y),
        "x": list(tile.x),
        "cube_version": cube_version(slices, tile),
        "products": status,
        "sections": {name: section_json(ctx.request, name) for name in ctx.request.products()},
        "failed_items": redact_json(tile_failed_items(slices, tile)),
        "committed": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    engine.write_unit(parts, record)
    return record


def make_unit(ctx: Context, engine: Engine, cube: xr.Dataset, tile: Tile, slices: list[dict], tile_px: int) -> dict:
    """Make every product of one tile (each retried, a failure marked "not computed"), write them and the
    unit's record in one unit; returns the record."""
    made, status = compute_products(ctx, cube, tile)
    groups = product_groups(ctx, engine, cube, tile, made, tile_px)
    return commit_unit(ctx, engine, tile, made, status, groups, slices)


def prepare_units(request: CubeRequest, engine: Engine, tile_px: int) -> list[Tile]:
    """Drop the product groups to remake (:func:`stale_groups`) and return the tiles whose unit is pending."""
    cube = engine.open()
    stale = stale_groups(request, engine, cube)
    if stale:
        log.info("remaking products %s from scratch (their section or the cube's time axis changed)", stale)
        engine.drop_groups(stale)
    return pending_units(
        request, engine, tiles_of(cube.sizes["y"], cube.sizes["x"], tile_px), list(engine.committed().values())
    )


def make_tile(ctx: Context, engine: Engine, tile: Tile, tile_px: int) -> dict:
    """Make one tile's unit against the store as it is now (for callers running units as tasks of their own:
    the first one alone, as it creates the product groups, then the others side by side)."""
    return make_unit(ctx, engine, engine.open(), tile, list(engine.committed().values()), tile_px)


def make_units(request: CubeRequest, engine: Engine, tile_px: int, progress: Progress | None = None) -> list[dict]:
    """Make every pending unit of ``request`` in the store behind ``engine``,
    :data:`~pipeline.chain.concurrency.SIDE_BY_SIDE` at a time, their work on the active Dask scheduler; their
    records. The first tile's unit creates the product groups (shaped like a whole tile's products): the
    others compute beside it and write once the groups exist. The run's context is resolved only if a unit is pending."""
    tiles = prepare_units(request, engine, tile_px)
    if not tiles:
        return []
    ctx = resolve_context(request, engine, tile_px)
    cube, slices = engine.open(), list(engine.committed().values())
    records: list[dict] = []
    groups_made, creating = threading.Event(), threading.Lock()

    def make(tile: Tile) -> dict:
        first = tile is tiles[0]
        try:
            made, status = compute_products(ctx, cube, tile)
            if not first:
                groups_made.wait()
            with creating:  # a group the first unit could not make is made by the next unit to get here
                groups = product_groups(ctx, engine, cube, tile, made, tile_px)
            if first:
                groups_made.set()
            # while a group is missing, the unit that makes it rewrites the store's metadata: not beside a write
            settled = len(groups) == len(made)
            with contextlib.nullcontext() if settled else creating:
                return commit_unit(ctx, engine, tile, made, status, groups, slices)
        finally:
            if first:
                groups_made.set()  # also when the first unit failed: the next one makes the groups then

    for record in side_by_side(make, tiles):
        records.append(record)
        if progress:
            progress("products", len(records), len(tiles))
    return records
