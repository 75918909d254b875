"""Pipeline stage: fit from labelled points sampled from a store (and save the artefact); predict maps into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.uncertainty.api import UncertaintyModel, fit
from pipeline.uncertainty.card import save_model
from pipeline.uncertainty.cube import (
    default_features,
    embedding_of,
    feature_array,
    open_product,
    read_points,
    sample_points,
    store_provenance,
)
from pipeline.uncertainty.network import as_method


def fit_from_points(
    store: str | Path,
    points: str | Path,
    *,
    variables: list[str] | None = None,
    n_steps: int = 6,
    target: str = "target",
    group_column: str | None = None,
    method: str = "mc-conctd",
    product: str = "cube",
    group: str | None = None,
    name: str | None = None,
    units: str | None = None,
    **options: Any,
) -> UncertaintyModel:
    """Sample the points' time windows from ``store`` and :func:`~pipeline.uncertainty.fit` a model.

    ``product``: ``"cube"`` (the root group), ``"composite"`` or ``"embeddings"`` (child group
    ``group``, default the product's name; see :func:`~pipeline.uncertainty.cube.open_product`).
    ``variables`` default to every float ``(y, x)`` variable of the product except ``valid``;
    ``n_steps`` is the window length (time steps; 1 for inputs without time); ``target`` the
    points' target column; ``name``/``units`` the predicted quantity (default: ``target``, unknown);
    ``group_column`` (e.g. a site id) makes the validation and calibration splits hold out whole
    groups. The model's metadata records the inputs (product, variables, features, embedding model),
    the target, the store and its provenance, and the points file with its sha256.
    """
    ds = open_product(store, product, group)
    variables = variables or default_features(ds)
    labelled = read_points(points, target)
    X, valid, y = sample_points(ds, labelled.table, variables, n_steps)
    groups = None
    if group_column is not None:
        if group_column not in labelled.table.columns:
            raise ValueError(f"points have no column {group_column!r}")
        groups = labelled.table[group_column].astype(str).to_numpy()
    model = fit(X, y, valid, method=as_method(method), groups=groups, **options)
    features = [str(f) for f in feature_array(ds, list(variables))["feature"].values]
    model.metadata.update(
        variables=list(variables),
        training_sha256=labelled.sha256,
        training_points=str(points),
        store=str(store),
        n_points=int(y.size),
        product=product,
        group=ds.encoding.get("eocube_group"),
        features=features,
        embedding=embedding_of(ds, list(variables)),
        target={"name": name or target, "units": units},
        group_column=group_column,
        store_attrs=store_provenance(store, ds),
    )
    return model


def train_artefact(
    store: str | Path, points: str | Path, out: str | Path, *, overwrite: bool = False, **kwargs: Any
) -> tuple[UncertaintyModel, Path]:
    """:func:`fit_from_points` then save the artefact to ``out``; ``out`` is checked before training
    (an existing artefact is replaced only with ``overwrite``). Returns the model and ``out``."""
    from pipeline.uncertainty.artefact_io import check_output

    check_output(out, overwrite)
    model = fit_from_points(store, points, **kwargs)
    return model, save_model(model, out, overwrite=overwrite)
