"""The demo: the request file ``pipeline/demo/request.yaml`` through the chain, like any other request.

``eocube demo`` fills in its paths, runs it as a backfill (resumable: a second run only makes what is
missing), trains the uncertainty artefact it names from the demo archive's labelled points when it is
not there yet (``eocube uncertainty train``, the same code), and makes the uncertainty product. The
completed request is written beside the store, so ``eocube backfill <out>/request.yaml`` runs it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import yaml

from pipeline.chain.backfill import backfill_request
from pipeline.chain.run import product_results, summarize
from pipeline.chain.search import search
from pipeline.cube.cluster import dask_client
from pipeline.demo.archive import ensure_demo_archive
from pipeline.model import ChainResult, CubeRequest, Progress, required
from pipeline.store.engines import open_engine
from pipeline.store.open import open_cube

log = logging.getLogger(__name__)

REQUEST_FILE = Path(__file__).resolve().parents[1] / "demo" / "request.yaml"
#: the demo's uncertainty model: its window (time steps) and what it predicts from the labelled points
N_STEPS, TARGET, UNITS = 6, "vegetation_cover", "%"


def demo_request(out: Path, with_embeddings: bool = True, with_uncertainty: bool = True) -> CubeRequest:
    """The demo request with its paths in ``out`` (the store, the artefact), without the sections asked away."""
    fields = yaml.safe_load(REQUEST_FILE.read_text())
    fields["output"] = str(out / fields["output"])
    fields["uncertainty"]["model"] = str(out / fields["uncertainty"]["model"])
    if not with_embeddings:
        fields.pop("embed")
    if not with_uncertainty:
        fields.pop("uncertainty")
    return CubeRequest.model_validate(fields)


def weights_available(model: str) -> str | None:
    """None when the encoder's released weights are on this machine, else why not (one line)."""
    from pipeline.embeddings.registry import SOURCES, canonical_name
    from pipeline.embeddings.weights import WeightsNotFoundError, resolve_weights

    try:
        resolve_weights(canonical_name(model), SOURCES[canonical_name(model)])
    except WeightsNotFoundError as exc:
        return str(exc).splitlines()[0]
    return None


def labels_in_period(store: Path, labels: Path, out: Path, n_steps: int = N_STEPS) -> Path:
    """The labelled points with ``n_steps`` cube time steps at or before their date, as a CSV at ``out``."""
    times = open_cube(store).time.values
    table = pd.read_csv(labels, parse_dates=["date"])
    inside = table[(table.date >= times[min(n_steps, times.size) - 1]) & (table.date <= times[-1])]
    if len(inside) < 20:
        raise ValueError(f"only {len(inside)} labelled points fall inside the cube's period; widen the dates")
    inside.to_csv(out, index=False, date_format="%Y-%m-%d")
    return out


def train_demo_artefact(store: Path, archive: Path, artefact: Path) -> None:
    """Train the demo's MC-ConcTD artefact on the cube at the archive's labelled points (vegetation cover, %)."""
    from pipeline.uncertainty.stage import train_artefact

    points = labels_in_period(store, archive / "labels.csv", artefact.with_name("labels-in-period.csv"))
    train_artefact(
        store,
        points,
        artefact,
        n_steps=N_STEPS,
        method="mc-conctd",
        seed=0,
        target="target",
        name=TARGET,
        units=UNITS,
        overwrite=True,
    )  # only the demo's own folder (no card: not complete)


def run_demo(
    out: Path,
    archive: Path | None = None,
    dask_address: str | None = None,
    progress: Progress | None = None,
    **changes: object,
) -> tuple[ChainResult, dict[str, str]]:
    """Run the demo request into ``out`` (``changes``: request fields to change, e.g. a shorter period);
    the result, and the sections skipped with the reason (no weights)."""
    archive = ensure_demo_archive(archive, progress)
    skipped = {}
    why = weights_available("presto")
    if why:  # the released weights may not be on this machine: say so and go on
        skipped["embeddings"] = why
    request = demo_request(out, with_embeddings=not why)
    request = CubeRequest.model_validate({**request.model_dump(), **changes}) if changes else request
    artefact = required(request.uncertainty, "uncertainty").model
    out.mkdir(parents=True, exist_ok=True)
    if not (artefact / "card.json").is_file():
        first = request.model_copy(update={"uncertainty": None})
        backfill_request(first, archive=archive, dask_address=dask_address, progress=progress)
        train_demo_artefact(request.output, archive, artefact)
    (out / "request.yaml").write_text(
        yaml.safe_dump(request.model_dump(mode="json", exclude_none=True), sort_keys=False)
    )
    report = backfill_request(request, archive=archive, dask_address=dask_address, progress=progress)
    found = search(request, archive)
    with dask_client(dask_address):
        cube = summarize(request.output, found, quicklook_path=request.output.with_suffix(".quicklook.png"))
    engine = open_engine(request.output)
    result = ChainResult(
        store=str(request.output),
        format=engine.kind,
        cube=cube,
        products=product_results(engine),
        slices_written=len(report.written),
        units_written=len(report.units),
        stac_item=report.stac_item,
    )
    return result, skipped
