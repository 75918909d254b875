"""The main job, request -> search -> cube -> store, as plain functions.

The Prefect flow in ``flows/build_cube.py`` calls these steps as tasks; notebooks and
scripts may call :func:`run_job` directly.
"""
from __future__ import annotations

import contextlib
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

    def to_dict(self) -> dict:
        return asdict(self)


def assemble_and_write(request: CubeRequest, found: dict[str, SensorItems],
                       progress: Progress | None = None) -> Path:
    """Build the lazy cube of ``found`` on the request grid and write it to ``request.output``."""
    cube = request_cube(request, found)
    sources = cube.attrs.pop("source_items")
    cube.attrs.update(provenance_attrs(request.model_dump(mode="json"), sources))
    return write_store(cube, request.output, request.chunks,
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
    )


def run_job(request: CubeRequest, archive: Path | None = None, progress: Progress | None = None) -> CubeSummary:
    """Search, assemble, write and summarise, on the active Dask scheduler."""
    t0 = time.perf_counter()
    found = search(request, archive, progress)
    store = assemble_and_write(request, found, progress)
    summary = summarize(store, found, quicklook_path=Path(store).with_suffix(".quicklook.png"))
    summary.seconds = round(time.perf_counter() - t0, 1)
    return summary
