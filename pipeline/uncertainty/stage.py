"""Pipeline stage: fit from labelled points sampled from a store; predict maps into a store."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.uncertainty.api import UncertaintyModel, fit
from pipeline.uncertainty.cube import default_features, open_store, read_points, sample_points


def fit_from_points(store: str | Path, points: str | Path, *, variables: list[str] | None = None,
                    n_steps: int = 6, target: str = "target", group_column: str | None = None,
                    method: str = "mc-conctd", **options: Any) -> UncertaintyModel:
    """Sample the points' time windows from ``store`` and :func:`~pipeline.uncertainty.fit` a model.

    ``variables`` default to every float ``(y, x)`` variable of the store except ``valid``;
    ``n_steps`` is the window length (store time steps); ``group_column`` (e.g. a site id) makes
    the validation and calibration splits hold out whole groups. The model's metadata records the
    variables, the store and the sha256 of the points file.
    """
    ds = open_store(store)
    variables = variables or default_features(ds)
    labelled = read_points(points, target)
    X, valid, y = sample_points(ds, labelled.table, variables, n_steps)
    groups = None
    if group_column is not None:
        if group_column not in labelled.table.columns:
            raise ValueError(f"points have no column {group_column!r}")
        groups = labelled.table[group_column].astype(str).to_numpy()
    model = fit(X, y, valid, method=method, groups=groups, **options)  # type: ignore[arg-type]
    model.metadata.update(variables=list(variables), training_sha256=labelled.sha256,
                          training_points=str(points), store=str(store), n_points=int(y.size))
    return model
