"""Model names -> architecture, official weights location, and a cached loader.

``load_encoder`` builds the encoder, loads the released checkpoint strictly, moves it to the device
and memoises the result per process (so each Dask worker loads a model once), keyed on the model
name, the resolved weights path, the device and whether it is compiled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from pipeline.embeddings.galileo import Galileo
from pipeline.embeddings.presto import Presto
from pipeline.embeddings.prithvi import PRITHVI_CONFIGS, PrithviViT, config_from_json
from pipeline.embeddings.weights import WeightsSource, companion_file, resolve_weights, sha256_of

_PRITHVI_FILES = {
    "prithvi-eo-2.0-tiny-tl": ("Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"),
    "prithvi-eo-2.0-100m-tl": ("Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "prithvi-eo-2.0-300m": ("Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi-eo-2.0-300m-tl": ("Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi-eo-2.0-600m": ("Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi-eo-2.0-600m-tl": ("Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}

#: Official weights locations (Presto: GitHub; Galileo and Prithvi: Hugging Face hub).
SOURCES: dict[str, WeightsSource] = {
    "presto": WeightsSource(
        "default_model.pt", url="https://raw.githubusercontent.com/nasaharvest/presto/main/data/default_model.pt"),
    "galileo-nano": WeightsSource(
        "encoder.pt", hf_repo="nasaharvest/galileo", hf_path="models/nano/encoder.pt",
        companions={"config.json": "models/nano/config.json",
                    "normalization.json": "https://raw.githubusercontent.com/nasaharvest/galileo/main/config/normalization.json"}),
    **{name: WeightsSource(fname, hf_repo=f"ibm-nasa-geospatial/{repo}") for name, (repo, fname) in _PRITHVI_FILES.items()},
}
ALIASES = {"galileo": "galileo-nano", "prithvi": "prithvi-eo-2.0-300m-tl"}
MODELS: tuple[str, ...] = tuple(SOURCES)


@dataclass(frozen=True)
class EncoderInfo:
    """What was loaded: recorded in the output attributes."""

    name: str
    kind: str  # "pixel" (one embedding per pixel) or "patch" (one per spatial patch)
    weights_path: str
    weights_sha256: str
    embed_dim: int
    config: dict = field(default_factory=dict)


def canonical_name(name: str) -> str:
    """Canonical model name (aliases resolved); clear error listing the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in SOURCES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)} (aliases: {', '.join(ALIASES)})")
    return key


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def _build(name: str, path: Path) -> tuple[nn.Module, EncoderInfo]:
    state = _read_state(path)
    sha = sha256_of(path)
    if name == "presto":
        model: nn.Module = Presto.from_state_dict(state)
        cfg = {"embedding_size": 128, "depth": 2, "num_heads": 8, "mlp_ratio": 4}
        return model, EncoderInfo(name, "pixel", str(path), sha, 128, cfg)
    if name == "galileo-nano":
        cfg = json.loads(companion_file(path, "config.json").read_text())
        model = Galileo.from_state_dict(state, cfg)
        return model, EncoderInfo(name, "patch", str(path), sha, model.embedding_size, cfg["model"]["encoder"])
    beside = path.parent / "config.json"
    config = config_from_json(json.loads(beside.read_text())) if beside.is_file() else PRITHVI_CONFIGS[name]
    model = PrithviViT.from_state_dict(state, config)
    return model, EncoderInfo(name, "patch", str(path), sha, config.embed_dim, config.to_dict())


@lru_cache(maxsize=8)
def _load_cached(name: str, path: str, device: str, compile_model: bool) -> tuple[nn.Module, EncoderInfo]:
    model, info = _build(name, Path(path))
    model = model.to(torch.device(device)).eval().requires_grad_(False)
    if compile_model:
        model = torch.compile(model)
    return model, info


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_encoder(name: str, weights: str | Path | None = None, device: str | torch.device | None = None,
                 allow_download: bool = False, compile_model: bool = False) -> tuple[nn.Module, EncoderInfo]:
    """Load a released encoder (strict state-dict load) in eval mode; memoised per process.

    ``name``: one of :data:`MODELS` (or an alias); ``weights``: explicit file or folder (else the
    caches, see :mod:`pipeline.embeddings.weights`). A Prithvi ``config.json`` beside the weights
    overrides the named preset. Returns ``(module, info)``.
    """
    key = canonical_name(name)
    path = resolve_weights(key, SOURCES[key], weights, allow_download)
    dev = torch.device(device) if device is not None else default_device()
    return _load_cached(key, str(path.resolve()), str(dev), bool(compile_model))
