"""Write a cube as an analysis-ready Zarr v3 store, atomically.

The store is written under a temporary sibling name and renamed into place only once
every chunk and the consolidated metadata are on disk, so a reader never sees a
half-written store at the final path. Variables carry CF attributes (standard_name,
units, ``_FillValue``, ``grid_mapping``), the grid mapping variable ``spatial_ref`` holds
the CRS WKT and GeoTransform, and the root attributes hold provenance (see
:mod:`pipeline.store.cf`). Zarr v3 sharding is optional and checked for alignment.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import xarray as xr
import zarr

from pipeline import __version__
from pipeline.redaction import redact_json
from pipeline.store.cf import annotate_cf, encodings
from pipeline.store.layout import StoreLayout, check_alignment
from pipeline.store.overviews import write_overviews
from pipeline.store.paths import check_output, output_error, remove_store, swap_into_place

__all__ = ["StoreError", "annotate_cf", "encodings", "write_store", "provenance_attrs", "request_attr", "consolidate"]


class StoreError(RuntimeError):
    """A store could not be written or is incomplete."""


def provenance_attrs(request_json: dict, source_items: dict[str, list[str]], extra: dict | None = None) -> dict:
    """Root attributes recording how the store was made."""
    return {
        "title": "eocube analysis-ready data cube",
        "history": f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} created by eocube {__version__}",
        "source": "STAC items listed in eocube:source_items",
        "eocube:version": __version__,
        "eocube:request": request_attr(request_json),
        "eocube:source_items": json.dumps(source_items),
        **(extra or {}),
    }


def request_attr(request_json: dict) -> str:
    """The request as the store records it (root attribute ``eocube:request``): JSON, credentials redacted."""
    return json.dumps(redact_json(request_json), default=str)


def time_slabs(n_times: int, time_chunk: int, chunks_per_slab: int = 8) -> list[slice]:
    """Consecutive time ranges aligned to the time chunking, written one at a time."""
    step = max(1, time_chunk * chunks_per_slab)
    return [slice(i, min(i + step, n_times)) for i in range(0, n_times, step)]


def consolidate(path: Path | str) -> None:
    """Write consolidated metadata (a zarr-python v3 extension readers use to open in one read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # the manifest and journal folders eocube keeps in a store are not Zarr nodes, on purpose
        warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component", category=UserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=3)


def split_packing_attrs(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict]]:
    """``ds`` without the CF packing attributes (``scale_factor``, ``add_offset``, ``_FillValue``), and those.

    The integers are written as they are (``_FillValue`` as the Zarr array's ``fill_value``)
    and the attributes added once the data is on disk: given them, xarray would pack the
    integers again on region writes and run a fill-NaN pass over every integer chunk.
    """
    keys = ("scale_factor", "add_offset", "_FillValue")
    packing = {str(v): {k: a.attrs[k] for k in keys if k in a.attrs} for v, a in ds.data_vars.items()}
    packing = {v: p for v, p in packing.items() if p}
    stripped = {v: ds[v].copy(deep=False).assign_attrs() for v in packing}
    for v in packing:
        stripped[v].attrs = {k: x for k, x in ds[v].attrs.items() if k not in keys}
    return ds.assign(stripped), packing


@contextmanager
def atomic_store(path: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write a store into, moved to ``path`` only when the block completes.

    ``path`` must be free, or hold an eocube store and ``overwrite`` be set (see
    :func:`~pipeline.store.paths.check_output`; anything else is refused before the block runs).
    The previous store is swapped out in one step and removed only then; on any error the
    temporary store is removed and ``path`` is left as it was, so a half-written store never
    sits under the final name. A write that fails for want of space or permission raises
    :class:`~pipeline.store.paths.OutputPathError` naming ``path``.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if path.exists() or path.is_symlink():
            check_output(path, overwrite=overwrite)  # again: something may have appeared there meanwhile
            remove_store(swap_into_place(tmp, path))
        else:
            tmp.rename(path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = output_error(exc, path, tmp)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_in_time_slabs(
    ds: xr.Dataset, store: Path, encoding: dict, slabs: list[slice], progress: Callable[[int, int], None] | None = None
) -> None:
    """Create ``store`` from ``ds`` (metadata, coordinates, variables without a time dim), then write the
    time-dependent variables one time slab at a time; ``progress(done, total)`` after each slab."""
    along_time = [v for v in ds.data_vars if "time" in ds[v].dims]
    static = {v: ds[v].load() for v in ds.data_vars if v not in along_time}  # small; written with the metadata
    # write_empty_chunks: no all-equal-to-fill scan of every chunk before it is written
    # (dense cubes rarely have one; for integers the scan costs as much as compressing)
    ds.assign(static).to_zarr(
        store, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=encoding, write_empty_chunks=True
    )
    for i, sl in enumerate(slabs):
        part = ds[along_time].isel(time=sl)
        part = part.drop_vars([c for c in part.coords if "time" not in part[c].dims])
        part.to_zarr(store, region={"time": sl}, mode="r+", consolidated=False, write_empty_chunks=True)
        if progress:
            progress(i + 1, len(slabs))


def write_store(
    ds: xr.Dataset,
    path: Path | str,
    chunks: dict[str, int],
    *,
    shards: dict[str, int] | None = None,
    overview_levels: int = 0,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    after_write: Callable[[], dict] | None = None,
) -> Path:
    """Write ``ds`` to a Zarr v3 store at ``path`` atomically (temp name, then rename).

    Metadata and coordinates are written first, then the data in time slabs (region
    writes, computed on the active Dask scheduler); ``progress(done, total)`` is called
    after each slab. Dask chunks are whole shards (or chunks when ``shards`` is None) and
    :func:`~pipeline.store.layout.check_alignment` verifies it before anything is written.
    ``overview_levels`` > 0 adds 2x, 4x, ... mean overviews (see :mod:`pipeline.store.overviews`).
    An existing eocube store at ``path`` is replaced (only with ``overwrite``) once the new one
    is complete; anything else at ``path`` is refused (:func:`atomic_store`). ``after_write()``
    runs once the data is written and returns root attributes to add (what was learnt while
    computing, e.g. failed reads); an error there leaves no store behind.
    """
    path = Path(path)
    layout = StoreLayout(chunks, shards)
    ds = annotate_cf(ds).assign_attrs({"eocube:version": ds.attrs.get("eocube:version", __version__)})
    ds = ds.chunk(layout.dask_chunks(ds.sizes))
    check_alignment(ds, layout)
    ds, packing = split_packing_attrs(ds)
    encoding = encodings(ds, chunks, shards)
    for name, attrs in packing.items():
        encoding[name]["fill_value"] = attrs.get("_FillValue")
    with atomic_store(path, overwrite) as tmp:
        slabs = time_slabs(ds.sizes["time"], layout.unit("time", ds.sizes["time"]))
        write_in_time_slabs(ds, tmp, encoding, slabs, progress)
        root = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
        for name, attrs in packing.items():
            root[name].attrs.update(attrs)
        if after_write is not None:
            root.attrs.update(after_write())
        if overview_levels:
            write_overviews(tmp, overview_levels)
        consolidate(tmp)
    return path
