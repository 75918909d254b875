"""``eocube.video``: a Zarr v3 array-to-bytes codec around the video codec core.

Registered through the ``zarr.codecs`` entry point (see pyproject.toml), so any process with
``eocube`` installed opens stores written with it, lazily, chunk by chunk. Chunks are
``(band, time, y, x)`` or ``(time, y, x)``; each is an independent video (keyframe interval at
most the chunk's time length), so Dask reads chunks in parallel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

from pipeline.compression.codec import SUPPORTED_DTYPES, CodecParams, decode_array, encode_array
from pipeline.compression.video import QP_MAX

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

CODEC_NAME = "eocube.video"


def readable_configuration(configuration: dict[str, JSON]) -> dict[str, JSON]:
    """A stored configuration with a QP above :data:`~pipeline.compression.video.QP_MAX` lowered to it.

    Stores written before the ceiling came down (QP 50 and 51) must still open: decoding reads
    everything from each chunk's own header, and the QP only sets how chunks written from now on are coded.
    """
    qp = configuration.get("qp")
    if isinstance(qp, (int, float)) and qp > QP_MAX:
        return {**configuration, "qp": QP_MAX}
    return configuration


@dataclass(frozen=True)
class VideoCodec(ArrayBytesCodec):
    """Zarr codec storing each chunk as video streams; configuration = ``CodecParams`` fields."""

    is_fixed_size = False
    params: CodecParams

    def __init__(self, *, params: CodecParams | None = None, **config: Any) -> None:
        if params is not None and config:
            raise TypeError("give either params or configuration keywords, not both")
        object.__setattr__(
            self,
            "params",
            params if params is not None else CodecParams.from_json({**CodecParams().to_json(), **config}),
        )

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        known = {f.name for f in fields(CodecParams)}
        unknown = set(configuration or {}) - known
        if unknown:
            raise ValueError(f"unknown {CODEC_NAME} configuration keys: {sorted(unknown)}")
        config: dict[str, Any] = readable_configuration(configuration or {})  # CodecParams fields
        return cls(**config)

    def to_dict(self) -> dict[str, JSON]:
        return {"name": CODEC_NAME, "configuration": self.params.to_json()}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        native = dtype.to_native_dtype()
        if native.name not in SUPPORTED_DTYPES:
            raise ValueError(f"{CODEC_NAME} does not support dtype {native}; use one of {', '.join(SUPPORTED_DTYPES)}")
        if len(shape) not in (3, 4):
            raise ValueError(f"{CODEC_NAME} needs (band, time, y, x) or (time, y, x) arrays, got {len(shape)} dims")

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = await asyncio.to_thread(encode_array, np.asarray(chunk_array.as_numpy_array()), self.params)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        array = await asyncio.to_thread(decode_array, chunk_bytes.to_bytes())
        expected = chunk_spec.dtype.to_native_dtype()
        if array.shape != tuple(chunk_spec.shape) or array.dtype != expected:
            raise ValueError(
                f"{CODEC_NAME} chunk decoded to {array.dtype}{array.shape}, "
                f"expected {expected}{tuple(chunk_spec.shape)}"
            )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(array)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{CODEC_NAME} output size depends on the data")
