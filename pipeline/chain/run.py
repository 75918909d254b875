"""One request in one go: searched, assembled, written and summarised on a Dask cluster."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.catalog.search import SensorItems
from pipeline.chain.preflight import preflight
from pipeline.chain.search import search
from pipeline.cube.assemble import request_cube
from pipeline.cube.cluster import dask_client
from pipeline.cube.quicklook import write_quicklook
from pipeline.cube.source import open_cube
from pipeline.model import CubeRequest, Progress
from pipeline.redaction import redact_json
from pipeline.store.zarr_store import provenance_attrs, write_store


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


def run_request(request: CubeRequest, archive: Path | None = None, dask_address: str | None = None,
                progress: Progress | None = None) -> CubeSummary:
    """Check the request, search its catalog, write its store on a Dask cluster (``dask_address``, else
    ``$DASK_SCHEDULER_ADDRESS``, else a local one) and summarise it."""
    t0 = time.perf_counter()
    preflight(request)
    found = search(request, archive, progress)
    with dask_client(dask_address):
        store = assemble_and_write(request, found, progress)
        summary = summarize(store, found, quicklook_path=Path(store).with_suffix(".quicklook.png"))
    summary.seconds = round(time.perf_counter() - t0, 1)
    return summary
