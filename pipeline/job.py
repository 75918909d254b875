"""The main job, request -> search -> cube -> store, as plain functions.

The Prefect flow in ``flows/build_cube.py`` calls these steps as tasks; notebooks and
scripts may call :func:`run_job` directly.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline.catalog.config import CatalogConfig, load_catalog
from pipeline.catalog.search import SensorItems, search_items
from pipeline.catalog.server import serve_archive
from pipeline.cube.assemble import request_cube
from pipeline.cube.quicklook import write_quicklook
from pipeline.cube.source import open_cube
from pipeline.model import CubeRequest
from pipeline.redaction import redact_json
from pipeline.store.zarr_store import provenance_attrs, write_store

Progress = Callable[[str, int, int], None]


def default_demo_archive() -> Path:
    """Where the demo archive lives: ``$EOCUBE_DEMO_ARCHIVE`` or ``~/.cache/eocube/demo-archive``."""
    env = os.environ.get("EOCUBE_DEMO_ARCHIVE")
    return Path(env) if env else Path.home() / ".cache" / "eocube" / "demo-archive"


def ensure_demo_archive(path: Path | None = None, progress: Progress | None = None) -> Path:
    """Generate the demo archive unless a complete one is already at ``path``."""
    from pipeline.demo.archive import generate_archive

    return generate_archive(path or default_demo_archive(), progress=progress)


@contextlib.contextmanager
def catalog_endpoint(catalog: CatalogConfig, archive: Path | None = None,
                     progress: Progress | None = None) -> Iterator[str]:
    """The catalog's API URL; for a local archive, a loopback STAC API running meanwhile."""
    if catalog.kind == "local-archive":
        with serve_archive(ensure_demo_archive(archive, progress)) as url:
            yield url
    else:
        yield catalog.url  # type: ignore[misc]


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
    profiles = [load_profile(catalog.collection_for(sensor).profile) for sensor in request.sensors]
    bands = bands_of_profiles(request, profiles)
    for profile in profiles:
        resampling_for(profile, bands, request.resampling)
    mask_policy(request)
    if request.composite is not None:
        bins(np.array([np.datetime64(request.start, "ns")]), request.composite.freq)
    request_geobox(request)
    check_output(request.output, overwrite=request.overwrite, resume=resume)


def search(request: CubeRequest, archive: Path | None = None, progress: Progress | None = None) -> dict[str, SensorItems]:
    """Items per sensor for a request (starting and stopping a local API if needed)."""
    catalog = load_catalog(request.catalog)
    with catalog_endpoint(catalog, archive, progress) as url:
        return search_items(request, catalog, url)


@dataclass
class CubeSummary:
    """What a run produced, printed at the end of ``eocube run``/``eocube demo``."""

    store: str
    items_per_sensor: dict[str, int]
    shape: dict[str, int]
    bands: list[str]
    masked_fraction: float
    time_steps_per_sensor: dict[str, int]
    quicklook: str | None = None
    seconds: float = 0.0
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    failed_items: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def assemble_and_write(request: CubeRequest, found: dict[str, SensorItems],
                       progress: Progress | None = None) -> Path:
    """Build the lazy cube of ``found`` on the request grid and write it to ``request.output``.

    Items whose reads fail while the store is written are masked where they failed and listed
    in ``eocube:failed_items``; more of them than ``request.max_failed_fraction`` allows fail
    the run (:class:`~pipeline.cube.assemble.TooManyFailuresError`) and leave no store.
    """
    lazy = request_cube(request, found)
    cube = lazy.data.assign_attrs(provenance_attrs(request.model_dump(mode="json"), lazy.sources))

    def record_failures() -> dict:
        failed = lazy.check_failures(request.max_failed_fraction)
        lazy.reads.forget()
        return {"eocube:failed_items": json.dumps(redact_json(failed))}

    return write_store(cube, request.output, request.chunks, overwrite=request.overwrite, after_write=record_failures,
                       progress=(lambda d, n: progress("write", d, n)) if progress else None)


def summarize(store: Path, found: dict[str, SensorItems], quicklook_path: Path | None = None) -> CubeSummary:
    """Summary of a written store, with a quicklook PNG of its clearest date."""
    cube = open_cube(store)
    valid = cube["valid"].values
    sensors, counts = np.unique(cube["sensor"].values, return_counts=True)
    quicklook = write_quicklook(cube, quicklook_path) if quicklook_path else None
    return CubeSummary(
        store=str(store),
        items_per_sensor={s: len(f.items) for s, f in found.items()},
        shape={d: int(n) for d, n in cube.sizes.items()},
        bands=[str(b) for b in cube.attrs.get("eocube:bands", [])],
        masked_fraction=float(1 - valid.mean()),
        time_steps_per_sensor={str(s): int(c) for s, c in zip(sensors, counts)},
        quicklook=str(quicklook) if quicklook else None,
        duplicates_dropped={s: len(f.duplicates_dropped) for s, f in found.items()},
        failed_items=json.loads(cube.attrs.get("eocube:failed_items", "{}")),
    )


def run_job(request: CubeRequest, archive: Path | None = None, progress: Progress | None = None) -> CubeSummary:
    """Check, search, assemble, write and summarise, on the active Dask scheduler."""
    t0 = time.perf_counter()
    preflight(request)
    found = search(request, archive, progress)
    store = assemble_and_write(request, found, progress)
    summary = summarize(store, found, quicklook_path=Path(store).with_suffix(".quicklook.png"))
    summary.seconds = round(time.perf_counter() - t0, 1)
    return summary
