"""A trained uncertainty model as a deployable artefact: load it, check a cube against it, predict a tile.

A scheduled run loads the artefact (:func:`load_artefact`) and never retrains. Before any work it
checks the input product against the card (:func:`check_inputs`): the variables it was trained on,
enough time steps for its window, the same embedding model and weights. Every refusal is one line
(:class:`ArtefactError`, a ``ValueError``). :func:`predict_tile` gives the six ``(y, x)`` maps of a
tile, reproducibly for a seed and at any interval coverage (see :mod:`pipeline.uncertainty.card`
for the card's fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline.uncertainty.api import UncertaintyModel
from pipeline.uncertainty.artefact_io import ArtefactError
from pipeline.uncertainty.calibration import Calibration
from pipeline.uncertainty.card import build_card, load_model
from pipeline.uncertainty.cube import as_pixel_grid, embedding_of, feature_array, valid_array, window_indices
from pipeline.uncertainty.maps import FIELDS, LONG_NAMES, map_attrs, predict_block

__all__ = ["ArtefactError", "UncertaintyArtefact", "artefact_summary", "check_inputs", "load_artefact", "predict_tile"]

_SPATIAL = ("time", "y", "x", "patch_y", "patch_x")


@dataclass
class UncertaintyArtefact:
    """A loaded artefact: the model and its card (``path``: the folder it was read from, if any)."""

    model: UncertaintyModel
    card: dict[str, Any]
    path: Path | None = None

    @classmethod
    def from_model(cls, model: UncertaintyModel) -> UncertaintyArtefact:
        """An in-memory artefact of a fitted model (its card as :meth:`UncertaintyModel.save` would write it)."""
        return cls(model, build_card(model))

    @property
    def target(self) -> str:
        """Name of the predicted quantity (prefix of the output maps)."""
        return str(self.card["target"]["name"])

    @property
    def sha256(self) -> str:
        """sha256 of the artefact's weights file (``weights.safetensors``; ``model.pt`` for format 2;
        empty for an unsaved model): what identifies the artefact in provenance."""
        return next(iter((self.card.get("sha256") or {"": ""}).values()))

    def summary(self) -> dict[str, Any]:
        """See :func:`artefact_summary`."""
        return artefact_summary(self.card)

    def check_inputs(self, ds: xr.Dataset, product: str | None = None, anchor_time: Any = None) -> None:
        """See :func:`check_inputs`."""
        check_inputs(self.card, ds, product, anchor_time=anchor_time)

    def predict_tile(self, ds: xr.Dataset, **kwargs: Any) -> xr.Dataset:
        """See :func:`predict_tile`."""
        return predict_tile(self, ds, **kwargs)


def load_artefact(path: str | Path) -> UncertaintyArtefact:
    """Read an artefact folder (format 3, weights verified against the card's sha256; or format 2)."""
    model, card = load_model(path)
    return UncertaintyArtefact(model, card, Path(path))


def _label(card: dict[str, Any]) -> str:
    return f"artefact {card.get('target', {}).get('name', '?')!r} ({card.get('method', '?')})"


def _short(sha: str | None) -> str:
    return (sha or "none")[:12]


def _n_features(ds: xr.Dataset, variables: list[str]) -> int:
    return sum(int(np.prod([ds[v].sizes[d] for d in ds[v].dims if d not in _SPATIAL])) for v in variables)


def check_inputs(card: dict[str, Any], ds: xr.Dataset, product: str | None = None, *, anchor_time: Any = None) -> None:
    """Raise a one-line :class:`ArtefactError` unless ``ds`` can feed the artefact of ``card``.

    ``ds``: the input product (Dataset with the artefact's variables over ``(y, x)`` or
    ``(patch_y, patch_x)``, optionally ``time`` and one feature dimension); ``product``: which product
    it is (``None``: as the card's). Checked: the product, the variables and their feature count,
    at least ``n_steps`` time steps (at or before ``anchor_time``) for time-windowed inputs, and the
    embedding model name and weights sha256 for embedding inputs.
    """
    inputs, label = card.get("inputs") or {}, _label(card)
    if product is not None and product != inputs.get("product", "cube"):
        raise ArtefactError(f"{label} was trained on the {inputs.get('product')!r} product, not {product!r}")
    variables = list(inputs.get("variables") or [])
    if not variables:
        raise ArtefactError(f"{label} records no input variables (fitted on arrays, not from a store)")
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise ArtefactError(
            f"input lacks variable(s) {', '.join(missing)} that {label} needs "
            f"(it has {', '.join(map(str, ds.data_vars)) or 'none'})"
        )
    flat = [v for v in variables if not ({"y", "x"} <= set(ds[v].dims) or {"patch_y", "patch_x"} <= set(ds[v].dims))]
    if flat:
        raise ArtefactError(f"input variable(s) {', '.join(flat)} are not over (y, x); {label} predicts per pixel")
    n_feat, want = _n_features(ds, variables), inputs.get("n_features")
    if want is not None and n_feat != int(want):
        raise ArtefactError(f"input variables {', '.join(variables)} give {n_feat} features but {label} expects {want}")
    expected = inputs.get("embedding")
    if expected:
        got = embedding_of(ds, variables)
        if got is None:
            raise ArtefactError(
                f"input variable(s) {', '.join(variables)} carry no embedding model attributes; "
                f"{label} expects {expected['model']} (weights sha256 {_short(expected['weights_sha256'])})"
            )
        if (got["model"], got["weights_sha256"]) != (expected["model"], expected["weights_sha256"]):
            raise ArtefactError(
                f"input embeddings were made with {got['model']} (weights sha256 "
                f"{_short(got['weights_sha256'])}) but {label} expects {expected['model']} "
                f"(weights sha256 {_short(expected['weights_sha256'])})"
            )
    n_steps = int(inputs.get("n_steps") or 1)
    if n_steps > 1:
        if not any("time" in ds[v].dims for v in variables):
            raise ArtefactError(
                f"input variables have no time dimension but {label} needs windows of {n_steps} time steps"
            )
        times = ds["time"].values
        end = (
            times.size
            if anchor_time is None
            else int(np.searchsorted(times, np.datetime64(anchor_time, "ns"), "right"))
        )
        if end < n_steps:
            where = f" at or before {anchor_time}" if anchor_time is not None else ""
            raise ArtefactError(f"input has {end} time step(s){where} but {label} needs {n_steps}")


def predict_tile(
    artefact: UncertaintyArtefact,
    ds: xr.Dataset,
    *,
    anchor_time: Any = None,
    mc_samples: int | None = None,
    coverage: float | None = None,
    seed: int = 0,
) -> xr.Dataset:
    """The six float32 ``(y, x)`` maps ``{target}_mean``, ``_sigma_epistemic``, ``_sigma_aleatoric``,
    ``_sigma``, ``_lower``, ``_upper`` (target units) for every pixel of the tile ``ds``.

    ``ds`` is read into memory (a tile, not a whole cube). The window is the last ``n_steps`` time
    steps at or before ``anchor_time`` (default: the last step). ``mc_samples`` overrides the MC
    passes; ``coverage`` the interval's nominal coverage (served from the stored conformal scores or
    the Gaussian quantile); ``seed`` fixes the MC masks (drawn from a ``torch.Generator`` of that
    seed: torch's global RNG is untouched, and threads sharing the artefact get the same maps). NaN where a pixel has no valid input in its window. Patch embeddings give maps on the
    patch grid (``patch_y``/``patch_x`` renamed ``y``/``x``). Inputs are checked first (:func:`check_inputs`).
    """
    card, model = artefact.card, artefact.model
    check_inputs(card, ds, anchor_time=anchor_time)
    cal = model.calibration if coverage is None else _calibration_at(model.calibration, coverage, card)
    ds = as_pixel_grid(ds)
    variables = list(card["inputs"]["variables"])
    feats = feature_array(ds, variables)
    ok = valid_array(ds, feats)
    windowed = any("time" in ds[v].dims for v in variables)
    anchor = None if anchor_time is None else np.datetime64(anchor_time, "ns")
    t_idx = (
        window_indices(feats["time"].values, anchor, model.n_steps or feats.sizes["time"])
        if windowed
        else np.array([0])
    )
    window = [str(t) for t in feats["time"].values[t_idx]] if windowed else []
    res = predict_block(
        model,
        feats.isel(time=t_idx).values,
        ok.isel(time=t_idx).values.astype(bool),
        coverage=cal.coverage,
        mc_samples=mc_samples,
        seed=seed,
    )
    name, units = artefact.target, card["target"].get("units")
    attrs = {
        **map_attrs(model, variables, window),
        "eocube:coverage": float(cal.coverage),
        "eocube:calibration": cal.describe(),
        "eocube:seed": int(seed),
        "eocube:mc_samples": int(mc_samples if mc_samples is not None and model.stochastic else model.passes),
        "eocube:artefact_sha256": artefact.sha256,
        "grid_mapping": "spatial_ref",
        **({"units": units} if units else {}),
    }
    coords = {c: ds.coords[c] for c in ("y", "x", "spatial_ref") if c in ds.coords}
    return xr.Dataset(
        {f"{name}_{k}": (("y", "x"), res[j], {**attrs, "long_name": LONG_NAMES[k]}) for j, k in enumerate(FIELDS)},
        coords=coords,
    )


def _calibration_at(cal: Calibration, coverage: float, card: dict[str, Any]) -> Calibration:
    try:
        return cal.at(coverage)
    except ValueError as exc:
        raise ArtefactError(f"{_label(card)}: {exc}") from None


def artefact_summary(card: dict[str, Any]) -> dict[str, Any]:
    """Provenance of an artefact for logs and outputs: kind, method, α, calibration, target, inputs,
    training data, validation metrics and sha256 (JSON-able)."""
    cal = Calibration.from_dict(card["calibration"])
    inputs, training = card.get("inputs") or {}, card.get("training") or {}
    return {
        "kind": card.get("kind"),
        "format_version": card.get("format_version"),
        "created": card.get("created"),
        "eocube_version": card.get("eocube_version"),
        "method": card.get("method"),
        "target": card.get("target"),
        "alpha": card.get("alpha"),
        "mc_samples": card.get("mc_samples"),
        "members": card.get("members"),
        "calibration": {
            "kind": cal.kind,
            "coverage": cal.coverage,
            "n_calibration": cal.n_calibration,
            "description": cal.describe(),
            "any_coverage": cal.kind != "conformal" or cal.scores is not None,
        },
        "inputs": {k: inputs.get(k) for k in ("product", "variables", "n_steps", "n_features", "embedding")},
        "training": {k: training.get(k) for k in ("points", "points_sha256", "store", "group", "n_points")},
        "metrics": (card.get("metrics") or {}).get("validation"),
        "sha256": card.get("sha256"),
    }
