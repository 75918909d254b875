"""What a foundation model must declare to be used by the engine: :class:`EncoderSpec`.

Each model module (:mod:`~pipeline.embeddings.presto`, :mod:`~pipeline.embeddings.galileo`,
:mod:`~pipeline.embeddings.prithvi`) defines its spec(s) next to its architecture; the registry
(:mod:`pipeline.embeddings.registry`) lists them, one line per model family. The engine reads only
the spec, never a model's name. This module imports neither the registry nor the model modules (only
:mod:`~pipeline.embeddings.chips`, for types), so both can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from pipeline.embeddings.weights import WeightsSource, sha256_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import torch
    from torch import nn

    from pipeline.embeddings.chips import ChipBatch

EncoderKind = Literal["pixel", "patch"]


@dataclass(frozen=True)
class EncoderInfo:
    """What was loaded: recorded in the output attributes."""

    name: str
    kind: str  # "pixel" (one embedding per pixel) or "patch" (one per spatial patch)
    weights_path: str
    weights_sha256: str
    embed_dim: int
    config: dict = field(default_factory=dict)


class BuiltEncoder(NamedTuple):
    """A builder's result: the module with the checkpoint loaded, its width and its config (for the attrs)."""

    module: nn.Module
    embed_dim: int
    config: dict


class Adapter(Protocol):
    """Turns a :class:`~pipeline.embeddings.chips.ChipBatch` into the model's inputs and back.

    ``unit``: the output cell's side in pixels (1 for pixel models, the spatial patch otherwise);
    ``embed`` returns ``[B, h/unit, w/unit, D]`` float32, NaN where a cell never had a valid observation.
    """

    kind: str
    unit: int
    pooling: str

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray: ...


#: ``(state_dict, weights_path) -> BuiltEncoder``; reads any companion file (config) beside the weights
Builder = Callable[["Mapping[str, torch.Tensor]", Path], BuiltEncoder]
#: ``(info, patch_size) -> Adapter``; ``patch_size`` is the user's requested patch in pixels (models
#: with a fixed patch ignore it)
AdapterFactory = Callable[[EncoderInfo, int], Adapter]
#: ``(info, unit) -> chip side in pixels`` used when the caller gives none; ``unit`` is the adapter's cell
ChipDefault = Callable[[EncoderInfo, int], int]


@dataclass(frozen=True)
class EncoderSpec:
    """One released encoder: where its weights are, how to build it and how the engine feeds it.

    ``tokens_per_step`` and ``extra_tokens`` size the activation estimate of
    :func:`pipeline.embeddings.engine.auto_batch_size`: a pixel model encodes each pixel as a sequence
    of ``tokens_per_step × T + extra_tokens`` tokens; a patch model encodes a chip as one sequence of
    ``cells × T × tokens_per_step + extra_tokens`` tokens. ``normalisation`` says where the input
    normalisation constants come from (shown to users; the adapter applies it).
    """

    name: str  #: canonical name, lower case
    kind: EncoderKind
    source: WeightsSource
    build: Builder
    adapter: AdapterFactory
    default_chip: ChipDefault
    tokens_per_step: int  #: tokens per cell and time step (band groups)
    extra_tokens: int  #: tokens per sequence not tied to a step (CLS, location, static groups)
    normalisation: str
    aliases: tuple[str, ...] = ()  #: other names accepted for this model, lower case

    def load(self, state: Mapping[str, torch.Tensor], weights_path: Path) -> tuple[nn.Module, EncoderInfo]:
        """Build the module from ``state`` (read from ``weights_path``) and describe it."""
        built = self.build(state, weights_path)
        info = EncoderInfo(
            self.name, self.kind, str(weights_path), sha256_of(weights_path), int(built.embed_dim), built.config
        )
        return built.module, info


def fixed_chip(pixels: int) -> ChipDefault:
    """A :data:`ChipDefault` that is always ``pixels``."""
    return lambda info, unit: pixels
