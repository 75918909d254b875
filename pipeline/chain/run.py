"""One request in one go: every stage it names, on a Dask cluster, its store moved into place when complete.

:func:`assemble_and_write` is the plain way to write a request's cube alone to a Zarr store (no products,
no units): the reference the tests compare chains with, and what notebooks may call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from pipeline.chain.preflight import check_products, preflight
from pipeline.chain.search import search
from pipeline.chain.slices import BackfillReport, BackfillSpec, backfill
from pipeline.cube.assemble import request_cube
from pipeline.cube.cluster import dask_client
from pipeline.cube.quicklook import write_quicklook
from pipeline.model import ChainResult, CubeRequest, CubeResult, ProductResult, Progress, SearchResult
from pipeline.redaction import redact_json
from pipeline.store.engines import Engine, open_engine
from pipeline.store.journal import is_journal, journal_dir, write_lock
from pipeline.store.open import open_cube
from pipeline.store.paths import (
    OutputPathError,
    beside,
    check_beside,
    check_output,
    is_eocube_store,
    is_icechunk_repository,
    output_error,
    partial_path,
    remove_store,
    swap_into_place,
)
from pipeline.store.stac import stac_paths, write_stac
from pipeline.store.zarr_store import provenance_attrs, request_attr, write_store


def assemble_and_write(request: CubeRequest, found: SearchResult, progress: Progress | None = None) -> Path:
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

    return write_store(
        cube,
        request.output,
        request.chunks,
        overwrite=request.overwrite,
        after_write=record_failures,
        progress=(lambda d, n: progress("write", d, n)) if progress else None,
    )


def summarize(store: Path, found: SearchResult, quicklook_path: Path | None = None) -> CubeResult:
    """The :class:`~pipeline.model.CubeResult` of a written store, with a quicklook PNG of its clearest date."""
    cube = open_cube(store)
    sensors, counts = np.unique(cube["sensor"].values, return_counts=True)
    quicklook = write_quicklook(cube, quicklook_path) if quicklook_path else None
    return CubeResult(
        store=str(store),
        items_per_sensor={s: len(f.items) for s, f in found.items()},
        shape={str(d): int(n) for d, n in cube.sizes.items()},
        bands=[str(b) for b in cube.attrs.get("eocube:bands", [])],
        masked_fraction=float(1 - cube["valid"].mean().compute()),
        time_steps_per_sensor={str(s): int(c) for s, c in zip(sensors, counts, strict=True)},
        quicklook=str(quicklook) if quicklook else None,
        duplicates_dropped={s: len(f.duplicates_dropped) for s, f in found.items()},
        failed_items=json.loads(cube.attrs.get("eocube:failed_items", "{}")),
    )


def product_results(engine: Engine) -> list[ProductResult]:
    """The :class:`~pipeline.model.ProductResult` of every derived product in the store behind ``engine``."""
    from pipeline.chain.products import PRODUCTS

    out = []
    for name in PRODUCTS:
        group = engine.open_group(name)
        if group is None:
            continue
        units = json.loads(group.attrs.get("eocube:units", "{}"))
        provenance = {
            k: group.attrs[k]
            for k in ("model", "weights_sha256", "pooling", "eocube:artefact", "eocube:video")
            if k in group.attrs
        }
        out.append(
            ProductResult(
                name=name,
                variables=sorted(str(v) for v in group.data_vars),
                shape={str(d): int(n) for d, n in group.sizes.items()},
                units_computed=int(units.get("computed", 0)),
                not_computed=json.loads(group.attrs.get("eocube:not_computed", "{}")),
                provenance=provenance,
            )
        )
    return out


#: tiles of a one-shot run (pixels a side) and its cube slices' time steps
RUN_TILE_PX, RUN_TIME_STEP = 1024, 8
#: root attribute a run sets on its store, complete, just before moving it into place
RUN_COMPLETE_ATTR = "eocube:run_complete"


def run_request(
    request: CubeRequest,
    archive: Path | None = None,
    dask_address: str | None = None,
    progress: Progress | None = None,
    spec: BackfillSpec | None = None,
) -> ChainResult:
    """The whole chain for ``request`` in one go: check it, search its catalog, make its cube and every derived
    product it names on a Dask cluster (``dask_address``, else ``$DASK_SCHEDULER_ADDRESS``, else a local one),
    and move the complete store to ``request.output`` (replacing an eocube store there only with
    ``request.overwrite``).

    The store is built at :func:`partial_path` by the same unit machinery as a backfill
    (:func:`~pipeline.chain.slices.backfill`), so nothing is ever half-written under the final name and a
    killed run resumes where it stopped.
    """
    t0 = time.perf_counter()
    final = Path(request.output)
    finishing = unfinished_by(final, request)
    preflight(request, resume=finishing)
    spec = spec or BackfillSpec(engine=request.format, tile_px=RUN_TILE_PX, time_step=RUN_TIME_STEP)
    work = request.model_copy(update={"output": partial_path(final), "overwrite": False})
    with write_lock(final):
        check_partial(work.output)  # under the lock: a run still building there says "locked" instead
        discard_foreign_partial(work)
        found = search(request, archive, progress)
        check_products(request, found)  # the cube's time steps are known now: before any work
        report = BackfillReport(store=str(final), engine=request.format, planned=0)
        if not finishing:
            report = build_aside(request, work, found, spec, dask_address, progress)
            open_engine(work.output).update_attrs({RUN_COMPLETE_ATTR: True})
            move_into_place(work.output, final, request.overwrite)
        engine = open_engine(final)
        engine.update_attrs({"eocube:request": request_attr(request.model_dump(mode="json"))})  # not the partial's
        stac_item = write_stac(engine)
        with dask_client(dask_address):
            cube = summarize(final, found, quicklook_path=final.with_suffix(".quicklook.png"))
    return ChainResult(
        store=str(final),
        format=engine.kind,
        cube=cube,
        products=product_results(engine),
        slices_written=len(report.written),
        units_written=len(report.units),
        stac_item=str(stac_item),
        seconds=round(time.perf_counter() - t0, 1),
    )


def unfinished_by(final: Path, request: CubeRequest) -> bool:
    """Whether ``final`` holds the store of a run of ``request`` stopped after its store was moved into place
    and before its STAC files and quicklook were written: the same request again finishes it."""
    if request.overwrite or not is_eocube_store(final) or all(p.is_file() for p in beside(final)):
        return False
    try:
        attrs = open_engine(final).open().attrs
        recorded = json.loads(attrs.get("eocube:request") or "{}")
        same = CubeRequest.model_validate({**recorded, "output": str(final), "overwrite": False})
    except Exception:  # not a chain store, or one whose request cannot be read: not a run to finish
        return False
    return bool(attrs.get(RUN_COMPLETE_ATTR)) and same == request.model_copy(update={"overwrite": False})


def build_aside(
    request: CubeRequest,
    work: CubeRequest,
    found: SearchResult,
    spec: BackfillSpec,
    dask_address: str | None,
    progress: Progress | None,
) -> BackfillReport:
    """Every slice and unit of ``request`` built at ``work.output`` (its partial store)."""
    final = Path(request.output)
    with dask_client(dask_address):
        try:
            report = backfill(
                work,
                found,
                spec,
                product_progress=progress,
                progress=(lambda d, n: progress("cube", d, n)) if progress else None,
            )
        except OSError as exc:  # a full disk, a folder made read-only meanwhile: say so of the user's path
            error = output_error(exc, final, work.output)
            if error is None:
                raise
            discard_partial(work.output)
            raise error from exc
    return report


def check_partial(partial: Path) -> None:
    """Refuse, in one line, anything at the names a run builds its store under (the partial store, its journal,
    its STAC files) that eocube did not write there: a run removes or replaces what it finds at them."""
    ours = is_eocube_store(partial) or is_icechunk_repository(partial)  # (a repository killed before its creation)
    if partial.exists() and not (ours or (partial.is_dir() and not any(partial.iterdir()))):
        raise OutputPathError(
            f"{partial} exists and was not written by eocube; a run builds its store there: move it away"
        )
    if not is_journal(journal_dir(partial)):
        raise OutputPathError(
            f"{journal_dir(partial)} holds files eocube did not write; a run keeps its journal there: move it away"
        )
    check_beside(beside(partial))


def discard_foreign_partial(work: CubeRequest) -> None:
    """Remove a partial store left by a killed run of another request (its cube differs): it cannot be resumed."""
    path = Path(work.output)
    if not path.exists():
        return
    if is_eocube_store(path):
        recorded = json.loads(open_engine(path).open().attrs.get("eocube:request", "{}"))
        if (
            recorded
            and CubeRequest.model_validate({**recorded, "output": str(path)}).cube_fields() == work.cube_fields()
        ):
            return
    discard_partial(path)


def discard_partial(path: Path) -> None:
    """Remove a run's partial store, its journal and STAC files (all eocube's own, under hidden names:
    :func:`check_partial` has refused anything else there)."""
    check_partial(path)
    remove_store(path)
    remove_store(journal_dir(path))
    for leftover in stac_paths(path):
        leftover.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.partial-*"):
        if is_eocube_store(leftover) or not any(leftover.iterdir()):
            remove_store(leftover)


def move_into_place(partial: Path, final: Path, overwrite: bool) -> None:
    """Move the complete store from ``partial`` to ``final`` in one step (an eocube store there is swapped out
    and removed, only with ``overwrite``), with its journal; the partial's STAC files go."""
    if final.exists() or final.is_symlink():
        check_output(final, overwrite=overwrite)
        remove_store(swap_into_place(partial, final))
    else:
        partial.rename(final)
    runs = journal_dir(partial) / "runs.jsonl"
    if runs.is_file():
        journal_dir(final).mkdir(parents=True, exist_ok=True)
        with (journal_dir(final) / "runs.jsonl").open("a") as out:
            out.write(runs.read_text())
    remove_store(journal_dir(partial))
    for leftover in stac_paths(partial):
        leftover.unlink(missing_ok=True)
