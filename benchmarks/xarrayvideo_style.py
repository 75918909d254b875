"""A stand-in for the xarrayvideo library's lossy pipeline, for side-by-side rate-distortion runs.

xarrayvideo (Pellicer-Valero et al., 2025) is not on the package index this project installs from,
so this module re-creates its published lossy recipe with PyAV, from the library's documented
settings (written here from those facts, not from its code):

* each band is scaled with its own minimum and maximum over the whole cube to ``2**12 - 1`` codes;
* bands go three to a video in the given order (a short last group repeats its last band), as planar
  RGB frames that FFmpeg converts to ``yuv444p12le`` (swscale's default RGB->YCbCr matrix);
* libx265, preset ``medium``, ``tune=psnr``, CRF as the quality knob (its benchmark levels: CRF 1, 7,
  16, 27 and a QP-0 "best" level), every other x265 setting at its default (B-frames, GOP length);
* the whole time series is one video per group.

Frames narrower or lower than libx265 handles safely (``X265_MIN_WIDTH`` / ``X265_MIN_HEIGHT`` of
:mod:`pipeline.compression.video`: it corrupts the heap at widths of about 33..55 px) are edge-padded
to those sizes and cropped after decoding; larger frames are coded at their own size.

``roundtrip`` returns the decoded cube and the byte count, so any metric can be computed the same way
as for our codec.
"""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np

from pipeline.compression.video import X265_MIN_HEIGHT, X265_MIN_WIDTH

BITS = 12
MAX_CODE = (1 << BITS) - 1
#: the library's benchmark levels for libx265: "best" (QP forced to 0) and CRF values
LEVELS = ("best", 1, 7, 16, 27)


def _encoder_options(level: str | int) -> dict:
    if level == "best":
        return {"preset": "medium", "tune": "psnr", "crf": "51", "x265-params": "log-level=error:qpmin=0:qpmax=0.01"}
    return {"preset": "medium", "tune": "psnr", "crf": str(int(level)), "x265-params": "log-level=error"}


def _encode(planes: np.ndarray, level: str | int) -> list[bytes]:
    """``planes`` (time, 3, y, x) codes in R, G, B order -> HEVC packets (yuv444p12le)."""
    t, _, h, w = planes.shape
    ph, pw = max(h, X265_MIN_HEIGHT), max(w, X265_MIN_WIDTH)
    planes = np.pad(planes, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    h, w = ph, pw
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv444p12le"
    ctx.time_base, ctx.framerate = Fraction(1, 30), Fraction(30)
    ctx.options = _encoder_options(level)
    packets: list[bytes] = []
    for i in range(t):
        rgb = np.ascontiguousarray(np.moveaxis(planes[i], 0, -1))
        frame = av.VideoFrame.from_ndarray(rgb, format="gbrp12le", channel_last=True).reformat(format="yuv444p12le")
        frame.pts = i
        packets += [bytes(p) for p in ctx.encode(frame)]
    return packets + [bytes(p) for p in ctx.encode(None)]


def _decode(packets: list[bytes], height: int, width: int) -> np.ndarray:
    """HEVC packets -> (time, 3, height, width) codes in R, G, B order (padding cropped)."""
    ctx = av.CodecContext.create("hevc", "r")
    frames = []
    for data in [*packets, None]:
        for frame in ctx.decode(av.Packet(data) if data is not None else None):
            frames.append(np.moveaxis(frame.reformat(format="gbrp12le").to_ndarray(channel_last=True), -1, 0))
    return np.stack(frames)[..., :height, :width]


def roundtrip(cube: np.ndarray, level: str | int) -> tuple[np.ndarray, int, float, float]:
    """Code ``cube`` (band, time, y, x) the xarrayvideo way at ``level``.

    Returns the decoded cube (float64, the cube's unit), the bytes of all videos, and the encode and
    decode seconds (scaling included).
    """
    t0 = time.perf_counter()
    x = cube.astype(np.float64)
    lo, hi = x.min(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))
    span = np.where(hi > lo, hi - lo, 1.0)[:, None, None, None]
    codes = np.clip(np.rint((x - lo[:, None, None, None]) / span * MAX_CODE), 0, MAX_CODE).astype(np.uint16)
    n = codes.shape[0]
    order = list(range(n)) + [n - 1] * ((-n) % 3)
    videos = [
        (order[g : g + 3], _encode(np.stack([codes[k] for k in order[g : g + 3]], axis=1), level))
        for g in range(0, len(order), 3)
    ]
    t1 = time.perf_counter()
    back = np.empty_like(x)
    for group, packets in videos:
        decoded = _decode(packets, *x.shape[2:])
        for i, k in enumerate(group):
            back[k] = decoded[:, i] / MAX_CODE * span[k, 0, 0, 0] + lo[k]
    size = sum(len(p) for _, packets in videos for p in packets)
    return back, size, t1 - t0, time.perf_counter() - t1
