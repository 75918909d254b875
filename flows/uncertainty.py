"""Prefect flows of trained models: training writes a versioned artefact, on request only. Thin.

Predictions are the chain's: a request's ``uncertainty`` section names an artefact, and every run
(scheduled updates included) applies that artefact; nothing here is scheduled, so a deployment
never retrains silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.uncertainty.stage import train_artefact


@task(name="train-uncertainty-artefact", cache_policy=NO_CACHE)
def train_task(store: Path, points: Path, out: Path, overwrite: bool, options: dict[str, Any]) -> dict:
    model, path = train_artefact(store, points, out, overwrite=overwrite, **options)
    return {"artefact": str(path), **model.describe()}


@flow(name="train-uncertainty", log_prints=True)
def train_uncertainty(
    store: Path, points: Path, out: Path, overwrite: bool = False, options: dict[str, Any] | None = None
) -> dict:
    """Train an MC-TD / MC-ConcTD artefact on the points sampled from ``store`` and write it to ``out``
    (an existing artefact is replaced only with ``overwrite``)."""
    return train_task(Path(store), Path(points), Path(out), overwrite, options or {})
