"""Prefect flow ``uncertainty``: labelled points + store -> fitted model -> uncertainty maps. Thin."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.uncertainty.api import UncertaintyModel
from pipeline.uncertainty.maps import predict_map
from pipeline.uncertainty.stage import fit_from_points


@task(name="fit-uncertainty-model", cache_policy=NO_CACHE)
def fit_task(store: Path, points: Path, model_dir: Path, options: dict[str, Any]) -> Path:
    model = fit_from_points(store, points, **options)
    return model.save(model_dir)


@task(name="predict-uncertainty-maps", cache_policy=NO_CACHE)
def predict_task(model_dir: Path, store: Path, out: Path | None, name: str, block: int) -> Path:
    return predict_map(UncertaintyModel.load(model_dir), store, out, name=name, block=block)


@flow(name="uncertainty", log_prints=True)
def uncertainty(store: Path, points: Path, model_dir: Path, out: Path | None = None, name: str = "prediction",
                block: int = 256, options: dict[str, Any] | None = None) -> Path:
    """Fit on the points sampled from ``store``, save the model, and write the maps (into ``out`` or ``store``)."""
    saved = fit_task(Path(store), Path(points), Path(model_dir), options or {})
    return predict_task(saved, Path(store), None if out is None else Path(out), name, block)
