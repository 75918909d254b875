"""The encoder registry: model name -> :class:`~pipeline.embeddings.spec.EncoderSpec`, and a cached loader.

Each model module defines its spec(s) beside its architecture; :data:`ENCODERS` lists them, one line
per model family. Adding a model is its module plus one line here.

``load_encoder`` builds the encoder, loads the released checkpoint strictly, moves it to the device
and memoises the result per process (so each Dask worker loads a model once), keyed on the model
name, the resolved weights path, the device and whether it is compiled.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import cast

import torch
from torch import nn

from pipeline.embeddings import galileo, presto, prithvi
from pipeline.embeddings.spec import EncoderInfo, EncoderSpec
from pipeline.embeddings.weights import WeightsSource, resolve_weights

__all__ = [
    "ALIASES",
    "ENCODERS",
    "MODELS",
    "SOURCES",
    "EncoderInfo",
    "EncoderSpec",
    "canonical_name",
    "default_device",
    "load_encoder",
    "register_encoder",
    "spec_for",
]


def _index(specs: Iterable[EncoderSpec]) -> dict[str, EncoderSpec]:
    registry: dict[str, EncoderSpec] = {}
    for spec in specs:
        register_encoder(spec, registry)
    return registry


def register_encoder(spec: EncoderSpec, registry: dict[str, EncoderSpec] | None = None) -> EncoderSpec:
    """Add ``spec`` to ``registry`` (default: :data:`ENCODERS`); its name and aliases must be new and lower case.

    A spec registered at run time exists in this process only: Dask worker *processes* see the
    models listed in :data:`ENCODERS` (threaded workers share this process).
    """
    registry = ENCODERS if registry is None else registry
    taken = set(registry) | {a for s in registry.values() for a in s.aliases}
    for key in (spec.name, *spec.aliases):
        if key != key.lower():
            raise ValueError(f"encoder names are lower case; got {key!r}")
        if key in taken:
            raise ValueError(f"encoder name {key!r} is already registered")
    registry[spec.name] = spec
    return spec


#: Every known encoder, by canonical name: one line per model family.
ENCODERS: dict[str, EncoderSpec] = _index(
    [
        *presto.ENCODER_SPECS,
        *galileo.ENCODER_SPECS,
        *prithvi.ENCODER_SPECS,
    ]
)
# Views of the registry as imported (for listings and the weights lookup of the CLI and flows).
MODELS: tuple[str, ...] = tuple(ENCODERS)
SOURCES: dict[str, WeightsSource] = {name: spec.source for name, spec in ENCODERS.items()}
ALIASES: dict[str, str] = {alias: spec.name for spec in ENCODERS.values() for alias in spec.aliases}


def canonical_name(name: str) -> str:
    """Canonical model name (aliases resolved); clear error listing the known ones."""
    key = name.lower()
    if key in ENCODERS:
        return key
    for spec in ENCODERS.values():
        if key in spec.aliases:
            return spec.name
    aliases = [a for spec in ENCODERS.values() for a in spec.aliases]
    raise ValueError(f"unknown model {name!r}; known: {', '.join(ENCODERS)} (aliases: {', '.join(aliases)})")


def spec_for(name: str) -> EncoderSpec:
    """The spec of a model name or alias (see :func:`canonical_name`)."""
    return ENCODERS[canonical_name(name)]


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


@lru_cache(maxsize=8)
def _load_cached(name: str, path: str, device: str, compile_model: bool) -> tuple[nn.Module, EncoderInfo]:
    model, info = spec_for(name).load(_read_state(Path(path)), Path(path))
    model = model.to(torch.device(device)).eval().requires_grad_(False)
    if compile_model:
        model = cast(nn.Module, torch.compile(model))  # an OptimizedModule; the stubs say only "a callable"
    return model, info


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_encoder(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    allow_download: bool = False,
    compile_model: bool = False,
) -> tuple[nn.Module, EncoderInfo]:
    """Load a released encoder (strict state-dict load) in eval mode; memoised per process.

    ``name``: one of :data:`MODELS` (or an alias); ``weights``: explicit file or folder (else the
    caches, see :mod:`pipeline.embeddings.weights`). A Prithvi ``config.json`` beside the weights
    overrides the named preset. Returns ``(module, info)``.
    """
    spec = spec_for(name)
    path = resolve_weights(spec.name, spec.source, weights, allow_download)
    dev = torch.device(device) if device is not None else default_device()
    return _load_cached(spec.name, str(path.resolve()), str(dev), bool(compile_model))
