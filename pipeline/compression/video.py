"""In-process video encoding of integer planes through PyAV (libx265, ffv1), no pipes, no swscale.

A *stream* is ``(time, plane, y, x)`` unsigned integers coded as one video. Frames are built in the
exact pixel format (``gbrp12le``/``gray12le`` for libx265, ``gbrp16le``/``gray16le``/``gray`` for
ffv1), so no colour conversion happens. In planar GBR the G plane (plane 0) is the one libx265
codes as luma: plane 0 carries the strongest component. Packets are returned raw (no container).

Each codec is a :class:`VideoCodecSpec` (FFmpeg encoder and decoder, pixel formats, lossless or not,
its options from :class:`~pipeline.compression.codec.CodecParams`, frame size limits), and
:data:`VIDEO_CODECS` maps the name a stream's header records to it: adding a codec is its spec (beside
its options) and one entry there.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np

from pipeline.compression import x265_lambda


class StreamParams(Protocol):
    """What a codec's options are made from: the settings of :class:`pipeline.compression.codec.CodecParams`
    a stream needs (here, not imported from there: the codec imports this module); read-only."""

    @property
    def qp(self) -> float: ...
    @property
    def preset(self) -> str: ...
    @property
    def keyint(self) -> int: ...
    @property
    def threads(self) -> int: ...


#: libx265 corrupts the heap when closing an encoder whose frame width is in about 33..55 px and
#: rejects frames under 16 px; frames are edge-padded to at least this size (multiples of 8).
X265_MIN_WIDTH, X265_MIN_HEIGHT, X265_ALIGN = 64, 16, 8


#: QP range of the lossy path. libx265 takes QP 0..51 (at 12 bits its QP 0 is a step of about 10
#: codes, too coarse for the KLT path's high rates on real Sentinel-2). A QP below 0 keeps x265 at QP 0
#: and divides every step by ``2**(-qp / 6)`` through a flat HEVC scaling list of entries
#: ``round(16 * 2**(qp / 6))`` (16 is the default list), carried in the bitstream, with libx265's
#: rate-distortion multiplier scaled to match (:mod:`pipeline.compression.x265_lambda`). The floor is
#: -8 (entry 6): on a real Landsat scene (fill 0 beside data) a few 4x4 blocks of the first frame come
#: out far off from entry 3 (-14) when the bands are coded directly and from entry 2 (-17)
#: with the KLT, so the floor keeps twice the step of the first entry that broke
#: (``python -m benchmarks compression-settings --only floor``).
#: The ceiling is 49, not x265's 51: from x265 QP 50 on (``Qp'Y = QP + 24 >= 74`` at 12 bits) libx265's
#: 12-bit streams no longer decode to what libx265 reconstructed while coding them. Its own reconstruction
#: (its PSNR report) stays right, but FFmpeg's HEVC decoder rebuilds the blocks as their prediction with
#: the residual gone (a flat first frame at the mid code 2048, whatever was coded), though the packets are
#: as large as at QP 49: encoder and decoder disagree on the coefficients' scale. 8- and 10-bit streams of
#: the same frames decode right at 50 and 51, and nothing of ours (range, quantiser, KLT) is involved: the
#: planes handed to libx265 come back wrong.
QP_MIN, QP_MAX = -8, 49
#: A QP between two integers, ``q + f`` with ``0 <= q < QP_MAX``, is coded at x265 QP ``q`` except for the
#: last ``round(f * n)`` frames of each ``n``-frame GOP, which are coded at ``q + 1`` (x265 ``zones``):
#: the rate moves from ``q``'s to ``q + 1``'s a frame at a time (the keyframe, coarse only once all are,
#: is the last and often the largest step), and the coarser frames are the ones fewest later frames
#: predict from. On the Romania cube this lands just below the chord between the two integer
#: points (``python -m benchmarks compression-settings --only ratecontrol``). Below QP 0 a stream has one
#: scaling list: a fractional QP takes the integer entry just under its step and codes the tail at x265
#: QP 1 on it, a step ``2**(1 / 6)`` coarser (:func:`x265_quantiser`). The decoder needs nothing more:
#: every slice carries its QP.
#: where libx265's multiplier cannot be scaled (:data:`pipeline.compression.x265_lambda.AVAILABLE` False),
#: RDO quantisation is switched off below this QP: with QP 0's multiplier it zeroed so many of the
#: finer-step coefficients that quality went down while the step went down
#: (docs/history/results-compression.md, the ``fast+rdo`` preset section)
RDOQ_MIN_QP = -3


def check_qp(qp: float) -> float:
    """``qp`` as a float if it is one the lossy path codes (see :data:`QP_MIN` and fractional QPs above)."""
    qp = float(qp)
    if not QP_MIN <= qp <= QP_MAX:
        raise ValueError(
            f"qp {qp:g} must be in {QP_MIN}..{QP_MAX} (libx265 12-bit streams coarser than "
            f"QP {QP_MAX} decode to wrong values)"
        )
    return qp


@dataclass(frozen=True)
class X265Quantiser:
    """How libx265 codes one of our QPs: its constant QP, the share of each GOP coded one QP coarser, the list."""

    qp: int  #: x265's constant QP, 0..QP_MAX
    tail: float  #: share of each GOP's frames, its last, coded at ``qp + 1`` (0..1)
    scaling_entry: int | None  #: flat scaling-list entry (None: the default list, 16)


def x265_quantiser(qp: float) -> X265Quantiser:
    """libx265's settings for our ``qp`` (:data:`QP_MIN`, fractional QPs above).

    From QP 0 up, ``q + f`` is x265 QP ``q`` with a tail share ``f``. An integer QP below 0 is x265 QP 0
    with a flat list of ``round(16 * 2**(qp / 6))``. A fraction below 0 asks for a step of
    ``s = 16 * 2**(qp / 6)`` list units: the list is the integer entry just under ``s`` and the tail share
    the rest of the way, ``6 * log2(s / entry)`` (x265 QP 1 is ``2**(1 / 6)`` coarser on the same list),
    so the step moves evenly between the rounded entries and also between -1 and 0 (entries 14 and 16).
    """
    qp = check_qp(qp)
    if qp >= 0:
        base = math.floor(qp)
        return X265Quantiser(base, qp - base, None)
    step = x265_lambda.DEFAULT_SCALING_ENTRY * 2 ** (qp / 6)
    if qp.is_integer():
        return X265Quantiser(0, 0.0, round(step))
    entry = math.floor(step)
    return X265Quantiser(0, min(1.0, 6 * math.log2(step / entry)), entry)


def fractional_qp_zones(qp: float, keyint: int, frames: int) -> str:
    """x265 ``zones`` that code ``frames`` frames at the fractional ``qp``: each GOP's tail one x265 QP coarser.

    The tail is the last ``round(tail * n)`` frames of each ``n``-frame GOP (:func:`x265_quantiser`).
    libx265 (constant-QP mode) applies a zone ``s,e`` to the frames it starts after ``s - 1`` .. ``e - 1``
    frames are done, i.e. to 0-based frames ``s - 1`` .. ``e - 1`` when one frame is coded at a time
    (so fractional QPs run x265 with one frame thread), hence the ``+ 1`` below.
    """
    quantiser = x265_quantiser(qp)
    zones = []
    for start in range(0, frames, keyint):
        n = min(keyint, frames - start)
        coarse = round(quantiser.tail * n)
        if coarse:  # 0-based frames start + n - coarse .. start + n - 1
            zones.append(f"{start + n - coarse + 1},{start + n},q={quantiser.qp + 1}")
    return "/".join(zones)


def x265_step_codes(qp: float) -> float:
    """libx265's quantiser step at 12 bits, in codes, for our ``qp`` (about 10 codes at QP 0).

    HEVC's step is ``2**((QP - 4) / 6)`` at 8 bits and 16 times that at 12 bits, i.e.
    ``2**((qp + 20) / 6)``; below QP 0 the flat scaling list continues the same ladder.
    """
    return 2.0 ** ((qp + 20) / 6)


#: encoder option naming the flat scaling-list entry (1..16); turned into x265's file at encode time
FLAT_SCALING_OPTION = "eocube-flat-scaling-list"
_SCALING_LIST_NAMES = {
    size: [f"{kind}{size}X{size}_{plane}" for kind in ("INTRA", "INTER") for plane in ("LUMA", "CHROMAU", "CHROMAV")]
    for size in (4, 8, 16, 32)
}


#: Presets of our own: an x265 preset plus parameters on top of it. "fast+rdo" (the default) is
#: x265's "fast" with RDO quantisation (rdoq-level 2): on the real Sentinel-2 Romania cube better than
#: "fast" at equal rate, within the encode-speed target (full RD mode decisions, rd 4, added a little
#: more but missed the speed target at high rates;
#: ``python -m benchmarks compression-settings --only presets``).
#: Any x265 preset name is also accepted as is.
X265_PRESETS = {"fast+rdo": ("fast", "rdoq-level=2")}
DEFAULT_PRESET = "fast+rdo"


class CorruptStreamError(ValueError):
    """Encoded bytes could not be decoded."""


@dataclass(frozen=True)
class StreamSpec:
    """How one stream is coded: codec, pixel format, padded frame size and codec options."""

    codec: str
    pix_fmt: str
    height: int
    width: int
    options: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "height": self.height,
            "width": self.width,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, d: dict) -> StreamSpec:
        return cls(
            codec=d["codec"],
            pix_fmt=d["pix_fmt"],
            height=int(d["height"]),
            width=int(d["width"]),
            options=dict(d["options"]),
        )


def _no_session(spec: StreamSpec) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class VideoCodecSpec:
    """One video codec a stream can be coded with. ``name`` is the registry key, recorded in each
    stream's header (``spec.codec``), so a reader needs the same entry to decode it.

    ``pix_fmts``: FFmpeg pixel format per ``(planes, bits per sample)`` the codec codes exactly.
    ``options(params, frames)``: the encoder options stored with a stream of ``frames`` frames.
    ``min_height``/``min_width``/``align`` (pixels): frames are edge-padded up to a multiple of
    ``align`` and at least the minimum. ``delimited``: packets carry start codes, so a header keeps
    only the stream's byte length and FFmpeg's parser cuts the packets; otherwise it lists packet
    sizes. ``keeps_extradata``: the decoder needs the encoder's extradata (stored before the packets).
    ``ffmpeg_options`` turns stored options into FFmpeg's (our own keys resolved); ``session(stream)``
    is held around an encode (libx265's multipliers at low QPs, :mod:`pipeline.compression.x265_lambda`).
    """

    name: str
    encoder: str  #: FFmpeg encoder name
    decoder: str  #: FFmpeg decoder name
    lossless: bool
    pix_fmts: Mapping[tuple[int, int], str]
    options: Callable[[StreamParams, int], dict]
    min_height: int = 1
    min_width: int = 1
    align: int = 1
    delimited: bool = False
    keeps_extradata: bool = False
    ffmpeg_options: Callable[[dict], dict] = dict
    session: Callable[[StreamSpec], AbstractContextManager] = _no_session

    def pix_fmt(self, planes: int, bits: int) -> str:
        """Pixel format for ``planes`` planes of ``bits``-bit samples; clear error where the codec has none."""
        try:
            return self.pix_fmts[(planes, bits)]
        except KeyError:
            raise ValueError(
                f"video codec {self.name!r} codes no {planes}-plane {bits}-bit frames (it has {sorted(self.pix_fmts)})"
            ) from None

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """Size (rows, columns) a ``height`` x ``width`` frame is coded at (edge-padded where needed)."""
        up = lambda n, m: max(m, -(-n // self.align) * self.align)  # noqa: E731
        return up(height, self.min_height), up(width, self.min_width)


def x265_options(qp: float, preset: str, keyint: int, threads: int, frames: int | None = None) -> dict:
    """libx265 options: constant quantiser ``qp`` (-8 best .. 49, :data:`QP_MAX`), PSNR tuning, no B-frames.

    ``preset``: an x265 preset or one of :data:`X265_PRESETS`. ``frames``: the stream's length
    (default one GOP), which places the coarser frames of a fractional ``qp`` (:func:`fractional_qp_zones`).

    B-frames are off: with them libx265 12-bit output had frames with errors of thousands of codes
    on real Sentinel-2 stacks. GOPs are closed, ``keyint`` frames long. A ``qp`` below 0 is x265
    QP 0 with a flat scaling list (:data:`QP_MIN`; :data:`RDOQ_MIN_QP` where the multiplier is fixed).
    """
    quantiser = x265_quantiser(qp)
    zones = fractional_qp_zones(qp, keyint, frames or keyint)
    pools = "none" if threads == 1 else threads  # one thread: no worker pool at all (same speed, fewer threads to sync)
    frame_threads = 1 if zones else threads  # zones follow the frames done: one frame at a time
    x265_preset, tuning = X265_PRESETS.get(preset, (preset, ""))
    if qp < RDOQ_MIN_QP and not x265_lambda.AVAILABLE:
        tuning = ":".join([t for t in tuning.split(":") if t and not t.startswith("rdoq-level=")] + ["rdoq-level=0"])
    params = (
        f"log-level=error:info=0:keyint={keyint}:min-keyint={keyint}:open-gop=0:bframes=0:qp={quantiser.qp}"
        f":ipratio=1:pbratio=1:pools={pools}:frame-threads={frame_threads}" + (f":{tuning}" if tuning else "")
    )
    if zones:
        params += f":zones={zones}"
    options = {"preset": x265_preset, "tune": "psnr", "x265-params": params}
    if quantiser.scaling_entry is not None:
        options[FLAT_SCALING_OPTION] = str(quantiser.scaling_entry)
    return options


def flat_scaling_list(entry: int) -> Path:
    """Path of an x265 scaling-list file whose every entry (and DC) is ``entry``; written once per machine."""
    if not 1 <= entry <= 255:
        raise ValueError(f"scaling-list entry {entry} must be in 1..255")
    path = Path(tempfile.gettempdir()) / "eocube-x265" / f"flat-scaling-list-{entry}.txt"
    if not path.exists():
        lines = []
        for size, names in _SCALING_LIST_NAMES.items():
            for name in names:
                lines += [f"{name} =", ",".join([str(entry)] * min(size * size, 64))]
                if size >= 16:
                    lines += [f"{name}_DC =", str(entry)]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    return path


def _low_qp_scaling_entry(spec: StreamSpec) -> int | None:
    """The flat scaling-list entry of a libx265 stream coded at x265 QP 0 or 1 (16 without a list), else None.

    These streams read libx265's multipliers at QP 0 and 1 (:mod:`pipeline.compression.x265_lambda`):
    QP 0's frames, a fractional QP's tail at 1, and QP 1's frames."""
    if video_codec(spec.codec).encoder != "libx265":  # the multipliers are libx265's, whatever the entry's name
        return None
    params = dict(kv.split("=", 1) for kv in spec.options.get("x265-params", "").split(":") if "=" in kv)
    if params.get("qp") not in ("0", "1"):
        return None
    return int(spec.options.get(FLAT_SCALING_OPTION, x265_lambda.DEFAULT_SCALING_ENTRY))


def _encoder_options(options: dict) -> dict:
    """The options handed to FFmpeg: a flat scaling-list entry becomes x265's ``scaling-list`` file."""
    options = dict(options)
    entry = options.pop(FLAT_SCALING_OPTION, None)
    if entry is not None:
        options["x265-params"] += f":scaling-list={flat_scaling_list(int(entry))}"
    return options


def ffv1_options(threads: int) -> dict:
    """ffv1 version 3, range coder with the small context model (lossless, intra only).

    The small model adapts faster on EO frames of a few hundred pixels a side: on the Romania cube,
    the demo cube and two Landsat scenes it was both smaller and faster to decode than the
    large one (``python -m benchmarks compression-settings``, its ffv1 section).
    """
    return {"level": "3", "coder": "range_tab", "context": "0", "slicecrc": "0", "threads": str(threads)}


# ------------------------------------------------------------------------------------ codec registry
def _x265_stream_options(params: StreamParams, frames: int) -> dict:
    # a GOP never longer than the stream: a chunk of few dates is one closed GOP
    return x265_options(params.qp, params.preset, min(params.keyint, frames), params.threads, frames=frames)


def _x265_session(spec: StreamSpec) -> AbstractContextManager:
    return x265_lambda.lambda_for_scaling_entry(_low_qp_scaling_entry(spec))


def _ffv1_stream_options(params: StreamParams, frames: int) -> dict:
    return ffv1_options(params.threads)  # looked up when called, so ffv1_options can be swapped for a sweep


#: The lossy codec: HEVC at 12 bits, G plane coded as luma (see :func:`x265_options`).
LIBX265 = VideoCodecSpec(
    name="libx265",
    encoder="libx265",
    decoder="hevc",
    lossless=False,
    pix_fmts={(1, 12): "gray12le", (3, 12): "gbrp12le"},
    options=_x265_stream_options,
    min_height=X265_MIN_HEIGHT,
    min_width=X265_MIN_WIDTH,
    align=X265_ALIGN,
    delimited=True,
    ffmpeg_options=_encoder_options,
    session=_x265_session,
)
#: The lossless codec (also the mask streams'): ffv1 version 3, parameters in its extradata.
FFV1 = VideoCodecSpec(
    name="ffv1",
    encoder="ffv1",
    decoder="ffv1",
    lossless=True,
    pix_fmts={(1, 16): "gray16le", (3, 16): "gbrp16le", (1, 8): "gray"},
    options=_ffv1_stream_options,
    keeps_extradata=True,
)

#: Every video codec, by the name stream headers record: one entry per codec.
VIDEO_CODECS: dict[str, VideoCodecSpec] = {
    LIBX265.name: LIBX265,
    FFV1.name: FFV1,
}
#: ``(codec, planes, bits) -> pixel format`` of the codecs above (the mask streams look theirs up here)
PIX_FMT = {(c.name, *key): fmt for c in VIDEO_CODECS.values() for key, fmt in c.pix_fmts.items()}


def video_codec(name: str) -> VideoCodecSpec:
    """The registered codec called ``name`` (as a stream header records it); clear error otherwise."""
    try:
        return VIDEO_CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown video codec {name!r}; known: {', '.join(VIDEO_CODECS)}") from None


def _stream_codec(name: str) -> VideoCodecSpec:
    """The codec of a stream being read: a name missing from the registry means bytes we cannot decode."""
    try:
        return video_codec(name)
    except ValueError as exc:
        raise CorruptStreamError(str(exc)) from None


def padded_size(codec: str, height: int, width: int) -> tuple[int, int]:
    """Frame size a stream of ``codec`` is coded at (edge-padded for libx265, unchanged for ffv1)."""
    return video_codec(codec).frame_size(height, width)


def _to_frame(planes: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """Frame from ``planes`` (plane, y, x) in FFmpeg plane order (G, B, R for gbrp)."""
    if planes.shape[0] == 1:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(planes[0]), format=pix_fmt)
    rgb = np.stack([planes[2], planes[0], planes[1]], axis=-1)  # PyAV takes gbrp arrays in R, G, B order
    return av.VideoFrame.from_ndarray(rgb, format=pix_fmt, channel_last=True)


def _from_frame(frame: av.VideoFrame, n_planes: int) -> np.ndarray:
    """Planes (plane, y, x) of a decoded frame, in FFmpeg plane order."""
    arr = frame.to_ndarray(channel_last=True)
    if n_planes == 1:
        return arr[None]
    return np.stack([arr[..., 1], arr[..., 2], arr[..., 0]])


def _video_context(name: str, mode: Literal["r", "w"]) -> av.VideoCodecContext:
    """FFmpeg's ``name`` encoder (``"w"``) or decoder (``"r"``), which must be a video codec."""
    ctx = av.CodecContext.create(name, mode)
    if not isinstance(ctx, av.VideoCodecContext):
        raise ValueError(f"{name} is not a video codec")
    return ctx


def encode_stream(frames: np.ndarray, spec: StreamSpec) -> tuple[list[bytes], bytes]:
    """Encode ``frames`` (time, plane, y, x) as one video; returns the packets and the codec extradata."""
    t, _, h, w = frames.shape
    ph, pw = spec.height, spec.width
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    codec = video_codec(spec.codec)
    ctx = _video_context(codec.encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = pw, ph, spec.pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
    ctx.options = codec.ffmpeg_options(spec.options)
    packets: list[bytes] = []
    with codec.session(spec):
        for i in range(t):
            frame = _to_frame(frames[i], spec.pix_fmt)
            frame.pts = i
            packets.extend(bytes(p) for p in ctx.encode(frame))
        packets.extend(bytes(p) for p in ctx.encode(None))
    extradata = bytes(ctx.extradata or b"") if codec.keeps_extradata else b""
    return packets, extradata


def split_packets(codec: str, data: bytes) -> list[bytes]:
    """Cut a concatenated stream of a ``delimited`` codec (libx265: Annex B HEVC) back into its packets
    with FFmpeg's parser.

    HEVC packets carry their own start codes, so a header need not list packet sizes.
    """
    parser = av.CodecContext.create(_stream_codec(codec).decoder, "r")
    try:
        return [bytes(p) for p in [*parser.parse(data), *parser.parse(None)]]
    except av.error.FFmpegError as exc:
        raise CorruptStreamError(f"{codec} stream does not parse: {exc}") from None


def decode_stream(
    packets: list[bytes], extradata: bytes, spec: StreamSpec, n_frames: int, n_planes: int, height: int, width: int
) -> np.ndarray:
    """Decode a stream to ``(time, plane, y, x)`` integers, cropped to ``height`` x ``width``."""
    ctx = _video_context(_stream_codec(spec.codec).decoder, "r")
    ctx.width, ctx.height = spec.width, spec.height
    if extradata:
        ctx.extradata = extradata
    out: list[np.ndarray] = []
    try:
        for data in [*packets, None]:
            for frame in ctx.decode(av.Packet(data) if data is not None else None):
                if frame.format.name != spec.pix_fmt:
                    raise CorruptStreamError(f"decoded pixel format {frame.format.name}, expected {spec.pix_fmt}")
                out.append(_from_frame(frame, n_planes)[:, :height, :width])
    except av.error.FFmpegError as exc:
        raise CorruptStreamError(f"{spec.codec} stream does not decode: {exc}") from None
    if len(out) != n_frames:
        raise CorruptStreamError(f"{spec.codec} stream decoded to {len(out)} frames, expected {n_frames}")
    return np.stack(out)


def library_versions() -> dict:
    """Versions of PyAV and the FFmpeg libraries that code the streams."""
    return {
        "av": av.__version__,
        **{k: ".".join(map(str, v)) for k, v in av.library_versions.items() if k in ("libavcodec", "libavutil")},
    }
