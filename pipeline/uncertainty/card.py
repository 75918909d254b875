"""The uncertainty-model artefact (format 3): ``weights.safetensors`` + ``card.json``; format-2 folders read.

``weights.safetensors`` holds every member network's ``state_dict``, keys prefixed by the member
index (``"0.input_proj.weight"``, ...). ``card.json`` holds everything else:

* ``kind`` (``"eocube-uncertainty"``), ``format_version`` (3), ``created`` (UTC), ``eocube_version``;
* ``method``, ``alpha`` (learned drop rate per feature group for mc-conctd, the fixed rate for
  mc-td, else null), ``mc_samples`` (stochastic passes per member), ``members``;
* ``target``: ``{"name", "units"}`` of the predicted quantity;
* ``inputs``: ``{"product": "cube"|"composite"|"embeddings", "variables", "features", "n_features",
  "n_steps", "embedding": {"model", "weights_sha256"} | null}``;
* ``network``, ``train``, ``options``, ``train_info``: the settings and course of training;
* ``standardizer`` (feature and target location/scale, input and target units);
* ``calibration``: kind, coverage, σ factors, interval factor and, for split conformal, the sorted
  calibration ``scores`` so any coverage can be served (Gaussian intervals: any coverage is a quantile);
* ``training``: points file and its sha256, store, product group, point and split counts, group
  column, and the store's ``request``/``sources``/``composite`` provenance where it has them;
* ``metrics``: metrics of the validation (early-stopping) and calibration splits, target units;
* ``metadata``: the model's free-form metadata as recorded at fit time;
* ``sha256``: ``{"weights.safetensors": hex}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import __version__
from pipeline.uncertainty.api import FitOptions, UncertaintyModel
from pipeline.uncertainty.artefact_io import (
    CARD,
    ArtefactError,
    read_card,
    read_weights,
    sha256_file,
    utc_now,
    write_artefact,
)
from pipeline.uncertainty.calibration import Calibration
from pipeline.uncertainty.data import Standardizer
from pipeline.uncertainty.network import NetworkConfig, SequenceRegressor
from pipeline.uncertainty.train import TrainConfig, TrainInfo

KIND = "eocube-uncertainty"
FORMAT_VERSION = 3
LEGACY_VERSION = 2
READABLE = (LEGACY_VERSION, FORMAT_VERSION)
PRODUCTS = ("cube", "composite", "embeddings")


def build_card(model: UncertaintyModel, format_version: int = FORMAT_VERSION) -> dict[str, Any]:
    """The card of ``model`` (without ``sha256``, which :func:`write_artefact` adds)."""
    md = model.metadata
    d = model.describe()
    target = md.get("target") or {"name": "target", "units": None}
    store_attrs = md.get("store_attrs") or {}
    return {
        "kind": KIND,
        "format_version": format_version,
        "created": utc_now(),
        "eocube_version": __version__,
        "method": model.method,
        "target": {"name": target.get("name", "target"), "units": target.get("units")},
        "inputs": {
            "product": md.get("product", "cube"),
            "variables": list(md.get("variables") or []),
            "features": md.get("features"),
            "n_features": int(model.standardizer.x_mean.size),
            "n_steps": model.n_steps,
            "embedding": md.get("embedding"),
        },
        "network": model.network_config.to_dict(),
        "train": model.train_config.to_dict(),
        "options": asdict(model.options),
        "train_info": [i.to_dict() for i in model.train_info],
        "standardizer": model.standardizer.to_dict(),
        "calibration": model.calibration.to_dict(),
        "alpha": d["alpha"],
        "mc_samples": model.passes,
        "members": len(model.networks),
        "training": {
            "points": md.get("training_points"),
            "points_sha256": md.get("training_sha256"),
            "store": md.get("store"),
            "group": md.get("group"),
            "n_points": md.get("n_points"),
            "n_train": md.get("n_train"),
            "n_validation": md.get("n_validation"),
            "n_calibration": md.get("n_calibration"),
            "group_column": md.get("group_column"),
            **{k: store_attrs[k] for k in ("request", "sources", "composite") if k in store_attrs},
        },
        "metrics": model.metrics,
        "metadata": {k: v for k, v in md.items() if k != "store_attrs"},
    }


def model_tensors(model: UncertaintyModel) -> dict[str, np.ndarray]:
    """Every member's state_dict as numpy arrays, keys ``"{member}.{name}"``."""
    return {
        f"{i}.{k}": v.detach().cpu().numpy()
        for i, net in enumerate(model.networks)
        for k, v in net.state_dict().items()
    }


def save_model(model: UncertaintyModel, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` as a format-3 artefact folder; see :func:`~pipeline.uncertainty.artefact_io.write_artefact`."""
    return write_artefact(folder, model_tensors(model), build_card(model), overwrite)


def model_from_card(card: dict[str, Any], tensors: dict[str, np.ndarray]) -> UncertaintyModel:
    """Rebuild the model a card and its tensors describe (networks in eval mode)."""
    net_cfg = NetworkConfig(**card["network"])
    states: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        member, _, name = key.partition(".")
        states.setdefault(int(member), {})[name] = torch.from_numpy(np.array(value))
    if sorted(states) != list(range(int(card["members"]))):
        raise ArtefactError(f"weights hold members {sorted(states)} but the card records {card['members']}")
    nets = []
    for i in range(len(states)):
        net = SequenceRegressor(net_cfg)
        try:
            net.load_state_dict(states[i])
        except RuntimeError as exc:
            raise ArtefactError(
                f"weights of member {i} do not fit the card's network: {str(exc).splitlines()[0]}"
            ) from None
        nets.append(net.eval())
    return UncertaintyModel(
        nets,
        Standardizer.from_dict(card["standardizer"]),
        Calibration.from_dict(card["calibration"]),
        net_cfg,
        TrainConfig(**card["train"]),
        FitOptions(**card["options"]),
        [TrainInfo(**i) for i in card["train_info"]],
        _metadata(card),
        dict(card.get("metrics") or {}),
    )


def _metadata(card: dict[str, Any]) -> dict[str, Any]:
    """The model metadata of a card (the store's provenance back from ``training``)."""
    md = dict(card.get("metadata") or {})
    store_attrs = {k: card["training"][k] for k in ("request", "sources", "composite") if k in card.get("training", {})}
    if store_attrs:
        md["store_attrs"] = store_attrs
    return md


def _read_legacy(folder: Path) -> tuple[UncertaintyModel, dict[str, Any]]:
    """A format-2 folder (``model.pt`` + ``model.json``) as a model and an in-memory card."""
    if not (folder / "model.pt").is_file():
        raise ArtefactError(f"{folder / 'model.pt'} not found: not a saved uncertainty model")
    try:
        doc = json.loads((folder / "model.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{folder / 'model.json'} is not valid JSON: {exc}") from None
    if doc.get("format_version") != LEGACY_VERSION:
        raise ArtefactError(
            f"{folder / 'model.json'} has format_version {doc.get('format_version')!r}; "
            f"this eocube reads {LEGACY_VERSION} there (and {FORMAT_VERSION} as {CARD})"
        )
    net_cfg = NetworkConfig(**doc["network"])
    nets = []
    for state in torch.load(folder / "model.pt", map_location="cpu", weights_only=True):
        net = SequenceRegressor(net_cfg)
        net.load_state_dict(state)
        nets.append(net.eval())
    model = UncertaintyModel(
        nets,
        Standardizer.from_dict(doc["standardizer"]),
        Calibration.from_dict(doc["calibration"]),
        net_cfg,
        TrainConfig(**doc["train"]),
        FitOptions(**doc["options"]),
        [TrainInfo(**i) for i in doc["train_info"]],
        doc.get("metadata") or {},
    )
    card = build_card(model, LEGACY_VERSION)
    card["sha256"] = {"model.pt": sha256_file(folder / "model.pt")}
    return model, card


def load_model(folder: str | Path) -> tuple[UncertaintyModel, dict[str, Any]]:
    """``(model, card)`` of a format-3 artefact (weights verified) or a format-2 folder."""
    folder = Path(folder)
    if not (folder / CARD).is_file() and (folder / "model.json").is_file():
        return _read_legacy(folder)
    if not (folder / CARD).is_file():
        raise ArtefactError(f"{folder / CARD} not found: not a saved uncertainty model")
    card = read_card(folder, KIND, (FORMAT_VERSION,))
    return model_from_card(card, read_weights(folder, card)), card
