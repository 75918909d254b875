"""Encode a band stack to self-describing bytes and back: the codec core.

``encode_array`` takes ``(band, time, y, x)`` (or ``(time, y, x)``) values and returns bytes holding a
JSON header and video streams; ``decode_array`` inverts it using only those bytes. Lossy mode:
fixed-range 12-bit quantisation, optional KLT across bands (one rotation per chunk, or one per date
where that pays, see :mod:`pipeline.compression.klt`) with one shared step, components packed
three per ``gbrp12le`` libx265 video (strongest in the luma-coded G plane), leftovers each as
``gray12le``; a stream whose components hardly vary at the chosen QP is stored as their means instead
(:data:`WEAK_STREAM_FRACTION`). Lossless mode: 16-bit (8-bit for bool/uint8) ffv1. The video codec of each
mode is looked up in :data:`pipeline.compression.video.VIDEO_CODECS` (:data:`DEFAULT_CODECS`, or
``CodecParams.codec``). Missing values (NaN or ``nodata``)
travel in a lossless ffv1 mask stream and are restored exactly; a frame missing in every band is
not coded at all, only listed (``empty_frames``).

Byte layout: the header (:mod:`pipeline.compression.header`: magic, format version, length, zlib-compressed
JSON), then for each stream (mask last) its extradata followed by its packets. The header lists each HEVC
stream's byte length (FFmpeg's parser finds the packets in it) and each ffv1 stream's packet sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from pipeline.compression import klt
from pipeline.compression.header import pack_header, read_header
from pipeline.compression.mask_stream import decode_mask, encode_mask
from pipeline.compression.quantise import Quantiser, fill_missing, grid_candidates, missing_mask
from pipeline.compression.video import (
    DEFAULT_PRESET,
    CorruptStreamError,
    StreamSpec,
    VideoCodecSpec,
    check_qp,
    decode_stream,
    encode_stream,
    library_versions,
    split_packets,
    video_codec,
    x265_step_codes,
)
from pipeline.model import one_of
from pipeline.store.open import restore_dtype

LOSSY_BITS = 12
#: A lossy stream other than the first is not coded when every component in it varies by less than this
#: fraction of libx265's step (standard deviation over the chunk, in codes): it is stored as its mean.
#: Below that the video would spend its per-frame minimum (headers, skip flags) on values the
#: quantiser almost zeroes anyway; on real Sentinel-2 the weakest KLT component is such a stream at low
#: rates, and leaving it out codes better at equal rate
#: (``python -m benchmarks compression-settings --only streams``).
WEAK_STREAM_FRACTION = 0.1
SUPPORTED_DTYPES = ("bool", "uint8", "uint16", "int16", "int32", "uint32", "float32", "float64")
Mode = Literal["lossy", "lossless"]
Packing = Literal["triplet", "gray"]
KltScope = Literal["auto", "date", "chunk"]
MODES: tuple[Mode, ...] = ("lossy", "lossless")
PACKINGS: tuple[Packing, ...] = ("triplet", "gray")
KLT_SCOPES: tuple[KltScope, ...] = ("auto", "date", "chunk")
#: The video codec each mode codes with unless ``CodecParams.codec`` names another registered one.
DEFAULT_CODECS: dict[Mode, str] = {"lossy": "libx265", "lossless": "ffv1"}


@dataclass(frozen=True)
class CodecParams:
    """Settings of the codec.

    ``value_range``: fixed physical range ``(lo, hi)`` in the data's unit (reflectance 0..1 by
    default; e.g. 0..10000 for digital numbers), mapped to 12-bit codes in lossy mode (values
    outside are clipped and counted). ``qp``: libx265 constant quantiser, -8 (best) .. 49 (+6 doubles the
    step; below 0 through a flat scaling list, see :data:`pipeline.compression.video.QP_MIN`; coarser
    libx265 12-bit streams decode wrong, :data:`pipeline.compression.video.QP_MAX`); it may
    lie between two integers (the tail of each GOP one QP coarser).
    ``step``: lossless grid spacing of ``lo + k * step`` (default: 1 for integer dtypes, for floats
    the coarsest grid found in each chunk's values). ``nodata``: value treated as missing besides NaN.
    ``preset``: an x265 preset or ``"fast+rdo"`` (default; see :data:`pipeline.compression.video.X265_PRESETS`).
    ``klt_scope``: ``"date"`` fits a KLT rotation on each time step (on its spatial differences,
    :func:`pipeline.compression.klt.fit_frame_rotations`), ``"chunk"`` one on the whole chunk, and
    ``"auto"`` (default) takes the rotations per date where :func:`pipeline.compression.klt.frame_rotation_saving`
    predicts that they save bits (dates whose spectra differ: haze, clouds, season), else the chunk's
    (spectra that hardly change, where moving rotations would only cost temporal prediction).
    ``codec``: a name in :data:`pipeline.compression.video.VIDEO_CODECS` whose lossless flag matches
    ``mode`` (default None: :data:`DEFAULT_CODECS`); left out of the JSON when None.
    """

    mode: Mode = "lossy"
    qp: float = 12
    preset: str = DEFAULT_PRESET
    klt: bool = True
    klt_scope: KltScope = "auto"
    packing: Packing = "triplet"
    value_range: tuple[float, float] = (0.0, 1.0)
    step: float | None = None
    nodata: float | None = None
    keyint: int = 32
    threads: int = 1
    codec: str | None = None

    def __post_init__(self) -> None:
        one_of(self.mode, MODES, "mode")
        one_of(self.packing, PACKINGS, "packing")
        one_of(self.klt_scope, KLT_SCOPES, "klt_scope")
        lo, hi = self.value_range
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range {self.value_range} must be finite with hi > lo")
        check_qp(self.qp)
        if self.step is not None and not self.step > 0:
            raise ValueError(f"step {self.step} must be > 0")
        if self.keyint < 1 or self.threads < 1:
            raise ValueError("keyint and threads must be >= 1")
        if self.codec is not None and video_codec(self.codec).lossless != (self.mode == "lossless"):
            kind = "lossless" if video_codec(self.codec).lossless else "lossy"
            raise ValueError(f"video codec {self.codec!r} is {kind}; it cannot code mode {self.mode!r}")

    def video_codec(self) -> VideoCodecSpec:
        """The registered video codec this mode codes with."""
        return video_codec(self.codec or DEFAULT_CODECS[self.mode])

    def to_json(self) -> dict:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        if d["codec"] is None:  # the default codec leaves headers and store metadata as they always were
            del d["codec"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> CodecParams:
        d = dict(d)
        d["value_range"] = tuple(d["value_range"])
        return cls(**d)


def group_components(n: int, packing: Packing) -> list[list[int]]:
    """Component indices per stream: consecutive triplets, leftovers (and ``gray`` packing) one per stream."""
    full = n - n % 3 if packing == "triplet" else 0
    return [[k, k + 1, k + 2] for k in range(0, full, 3)] + [[k] for k in range(full, n)]


def _check_input(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(x).__name__}")
    if x.dtype.name not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype {x.dtype} not supported; use one of {', '.join(SUPPORTED_DTYPES)}")
    if x.ndim not in (3, 4) or 0 in x.shape:
        raise ValueError(f"expected a non-empty (band, time, y, x) or (time, y, x) array, got shape {x.shape}")
    return x[None] if x.ndim == 3 else x


def _lossy_transform(values: np.ndarray, params: CodecParams) -> tuple[np.ndarray, Quantiser, dict | None]:
    """Components (float64) of filled ``values``, the quantiser and the KLT record (or None)."""
    lo, hi = params.value_range
    max_code = (1 << LOSSY_BITS) - 1
    n = values.shape[0]
    if params.klt:
        mean, matrix = map(klt.compact, klt.fit_klt(values))
        record = {"mean": mean.tolist(), "matrix": matrix.tolist()}
        if params.klt_scope != "chunk":
            codes, rotations = klt.fit_frame_rotations(values, matrix)
            if params.klt_scope == "date" or klt.frame_rotations_pay(values, mean, matrix, rotations, (lo, hi)):
                matrix = rotations
                record = {"mean": mean.tolist(), "angle_bits": klt.ANGLE_BITS, "angles": codes.tolist()}
        comps = klt.forward(values, mean, matrix)
        c_lo, c_hi = klt.component_bounds(mean, matrix, lo, hi)
        step = float(klt.compact(np.array((c_hi - c_lo).max() / max_code)))
        return comps, Quantiser(tuple(map(float, klt.compact(c_lo))), step, LOSSY_BITS), record
    return values, Quantiser((float(lo),) * n, (hi - lo) / max_code, LOSSY_BITS), None


def _lossless_codes(
    x: np.ndarray, filled: np.ndarray, missing: np.ndarray, params: CodecParams
) -> tuple[np.ndarray, Quantiser]:
    """Codes of ``filled`` and the grid that rebuilds ``x`` (band, time, y, x) from them bit for bit.

    bool and uint8 take 8-bit codes, everything else 16-bit codes on ``value_range[0] + k * step``.
    Given no ``step``, integers take step 1 (from the data's minimum if ``value_range[0]`` does not
    fit them) and floats the coarsest grid their values lie on (:func:`grid_candidates`: DN stored as
    floats, reflectance from DN, Landsat Collection 2 scaling ...).
    """
    n = x.shape[0]
    if x.dtype == bool:
        grids, bits = [(0.0, 1.0)], 8
    else:
        bits = 8 if x.dtype == np.uint8 else 16
        if params.step is not None:
            grids = [(float(params.value_range[0]), float(params.step))]
        elif np.issubdtype(x.dtype, np.floating):
            grids = grid_candidates(x[~missing], n_codes=1 << bits)
        else:
            valid = x[~missing]
            lowest = float(valid.min()) if valid.size else 0.0
            grids = list(dict.fromkeys([(float(params.value_range[0]), 1.0), (lowest, 1.0)]))
    error = "no grid origin + k * step with 65536 codes holds them"
    for origin, step in grids:
        quant = Quantiser((origin,) * n, step, bits)
        codes, _ = quant.to_codes(filled)
        try:
            return codes, _exact_grid(x, codes, quant, missing, params.nodata)
        except ValueError as exc:
            error = str(exc)
    hint = "" if params.step is not None else "; pass the grid (step=..., value_range=(origin, ...)) or code them lossy"
    raise ValueError(f"lossless mode cannot code these {x.dtype} values exactly: {error}{hint}")


def _exact_grid(
    x: np.ndarray, codes: np.ndarray, quant: Quantiser, missing: np.ndarray, nodata: float | None
) -> Quantiser:
    """``quant`` with the arithmetic (float64, else float32) that rebuilds ``x`` exactly from ``codes``."""
    wrong = 0
    for precision in ("float64", "float32"):
        candidate = replace(quant, precision=precision)
        same = (restore_dtype(candidate.to_values(codes), x.dtype, missing, nodata) == x) | missing
        if same.all():
            return candidate
        wrong = int((~same).sum())
    raise ValueError(
        f"{wrong} values are not on the lossless grid {quant.offset[0]} + k * {quant.step} within 0..{quant.max_code}"
    )


def encode_array(x: np.ndarray, params: CodecParams = CodecParams()) -> bytes:
    """Encode ``x`` (band, time, y, x) or (time, y, x) to self-describing bytes (see module docstring)."""
    original_ndim = x.ndim if isinstance(x, np.ndarray) else 0
    full = _check_input(x)
    missing = missing_mask(full, params.nodata)
    empty = missing.all(axis=(0, 2, 3))  # frames with no value at all: listed in the header, not coded
    x4, missing = full[:, ~empty], missing[:, ~empty]
    fill = None if params.nodata is None or np.isnan(params.nodata) else float(params.nodata)
    header = {
        "format": "eocube.video",
        "dtype": full.dtype.name,
        "shape": list(full.shape),
        "axes": ["band", "time", "y", "x"][4 - original_ndim :],
        "mode": params.mode,
        "params": params.to_json(),
        "fill": fill,
        "empty_frames": np.flatnonzero(empty).tolist(),
        "quantiser": None,
        "klt": None,
        "streams": [],
        "mask": None,
        "clipped": 0,
        "library": library_versions(),
    }
    payload = _encode_frames(x4, missing, params, header) if x4.shape[1] else []
    return pack_header(header) + b"".join(payload)


def _encode_frames(x4: np.ndarray, missing: np.ndarray, params: CodecParams, header: dict) -> list[bytes]:
    """Code the frames ``x4`` (band, time, y, x; each with some value), filling ``header``'s stream records;
    returns the payload (each stream's extradata and packets, the mask last)."""
    n, t, h, w = x4.shape
    lo, hi = params.value_range
    filled = fill_missing(x4, missing, default=(lo + hi) / 2)
    if params.mode == "lossy":
        comps, quant, klt_record = _lossy_transform(filled, params)
        groups = group_components(n, params.packing)
        codes, clipped = quant.to_codes(comps)
    else:
        klt_record, clipped = None, 0
        codes, quant = _lossless_codes(x4, filled, missing, params)
        groups = group_components(n, "gray" if quant.bits == 8 else params.packing)
    codec = params.video_codec()
    options = codec.options(params, t)
    ph, pw = codec.frame_size(h, w)
    streams, payload = [], []
    weak = WEAK_STREAM_FRACTION * x265_step_codes(params.qp) if params.mode == "lossy" else 0.0
    for index, group in enumerate(groups):
        if index > 0 and all(codes[k].std() < weak for k in group):  # not worth a video: keep the mean
            streams.append({"components": group, "constant": [float(klt.compact(comps[k].mean())) for k in group]})
            continue
        planes = np.stack([codes[k] for k in group], axis=1)
        spec = StreamSpec(codec.name, codec.pix_fmt(len(group), quant.bits), ph, pw, options)
        packets, extradata = encode_stream(planes if quant.bits > 8 else planes.astype(np.uint8), spec)
        record = {"components": group, "spec": spec.to_json(), "extradata": len(extradata)}
        if codec.delimited:  # start codes delimit the packets (HEVC): only the stream length is stored
            record["bytes"] = sum(map(len, packets))
        else:
            record["packets"] = [len(p) for p in packets]
        streams.append(record)
        payload += [extradata, *packets]
    mask = None
    if missing.any():
        mask, mask_payload = encode_mask(missing, params.threads)
        payload += mask_payload
    header.update(quantiser=quant.to_json(), klt=klt_record, streams=streams, mask=mask, clipped=clipped)
    return payload


def klt_matrix(record: dict, n: int) -> np.ndarray:
    """The KLT of a header's ``klt`` record: (component, band), or (time, component, band) per date (format 5)."""
    if "angles" in record:
        return np.stack([klt.rotation_from_codes(c, n, record["angle_bits"]) for c in record["angles"]])
    return np.asarray(record["matrix"])


def _take(data: bytes, pos: int, record: dict) -> tuple[bytes, list[bytes], int]:
    """Extradata and packets of one stream record starting at ``pos``, and the position after them."""
    if "bytes" in record:  # HEVC: one length, packets found by the parser
        end = pos + record["extradata"] + record["bytes"]
        if end > len(data):
            raise CorruptStreamError("eocube.video bytes are truncated")
        extradata = data[pos : pos + record["extradata"]]
        return extradata, split_packets(record["spec"]["codec"], data[pos + record["extradata"] : end]), end
    sizes = [record["extradata"], *record["packets"]]
    if pos + sum(sizes) > len(data):
        raise CorruptStreamError("eocube.video bytes are truncated")
    chunks = []
    for s in sizes:
        chunks.append(data[pos : pos + s])
        pos += s
    return chunks[0], chunks[1:], pos


def decode_array(data: bytes) -> np.ndarray:
    """Invert ``encode_array``: the array with its dtype, shape, values and missing values restored."""
    data = bytes(data)
    header, pos = read_header(data)
    try:
        n, t_all, h, w = header["shape"]
        empty = np.zeros(t_all, dtype=bool)
        empty[header.get("empty_frames", [])] = True  # format 3; none before
        dtype = np.dtype(header["dtype"])
        out = np.empty((n, t_all, h, w), dtype=dtype)
        if empty.any():
            out[:, empty] = restore_dtype(np.zeros((n, 1, 1, 1)), dtype, np.ones((n, 1, 1, 1), bool), header["fill"])
        if not empty.all():
            out[:, ~empty] = _decode_frames(data, pos, header, n, int((~empty).sum()), h, w, dtype)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, CorruptStreamError):
            raise
        raise CorruptStreamError(f"corrupt eocube.video header: {exc!r}") from None
    return out[0] if len(header["axes"]) == 3 else out


def _decode_frames(data: bytes, pos: int, header: dict, n: int, t: int, h: int, w: int, dtype: np.dtype) -> np.ndarray:
    """The coded frames (band, time, y, x) of ``data``, whose streams start at ``pos``."""
    quant = Quantiser.from_json(header["quantiser"])
    codes = np.zeros((n, t, h, w), dtype=np.uint16)
    constants: dict[int, float] = {}
    for record in header["streams"]:
        group = record["components"]
        if "constant" in record:
            constants.update(zip(group, map(float, record["constant"]), strict=True))
            continue
        extradata, packets, pos = _take(data, pos, record)
        planes = decode_stream(packets, extradata, StreamSpec.from_json(record["spec"]), t, len(group), h, w)
        for i, k in enumerate(group):
            codes[k] = planes[:, i]
    missing = np.zeros((n, t, h, w), dtype=bool)
    if header["mask"] is not None:
        extradata, packets, pos = _take(data, pos, header["mask"])
        missing[:] = decode_mask(header["mask"], extradata, packets, n, t, h, w)
    values = quant.to_values(codes)
    for k, value in constants.items():
        values[k] = value
    if header["klt"] is not None:
        values = klt.inverse(values, np.asarray(header["klt"]["mean"]), klt_matrix(header["klt"], n))
    if header["mode"] == "lossy":  # the encoder clips to the fixed range; coding noise may step outside it
        values = np.clip(values, *header["params"]["value_range"])
    return restore_dtype(values, dtype, missing, header["fill"])
