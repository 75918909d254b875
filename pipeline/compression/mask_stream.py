"""The lossless stream that carries a chunk's missing values (NaN or nodata) inside ``eocube.video`` bytes.

A mask is ``shared`` (one for all bands, the usual cloud mask) or ``per-band``. Each of its frames
(one per date, or one per band and date) is in one of three states, listed in the header as a string
of digits (:data:`FRAME_STATES`): nothing missing, everything missing, or some pixels missing. Only the
last kind is coded. Those frames are stacked one under another into tall ffv1 images of at most
:data:`IMAGE_ROWS` rows (the last one padded with "not missing" frames; images of equal height), so that the coder's per-frame
cost is paid once per image, and its context model keeps what it learned from one date for the next.
On the Romania cube's real SCL cloud and shadow masks this is smaller than one ffv1 frame per
date (``python -m benchmarks compression-settings --only overhead`` measures both).

Format 3 bytes (one ffv1 frame per date, every date coded) still decode: their record has no
``frames`` entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.compression.video import PIX_FMT, StreamSpec, decode_stream, encode_stream, ffv1_options

#: a mask frame's state, one digit per frame in the record's ``frames`` string
NONE_MISSING, ALL_MISSING, CODED = "0", "1", "2"
FRAME_STATES = (NONE_MISSING, ALL_MISSING, CODED)
#: the most rows of one tall ffv1 image (frames stacked one under another)
IMAGE_ROWS = 8192


def encode_mask(missing: np.ndarray, threads: int) -> tuple[dict, list[bytes]]:
    """Record and payload (extradata, then packets) of the mask ``missing`` (band, time, y, x) bool."""
    h, w = missing.shape[2:]
    shared = bool((missing == missing[:1]).all())
    frames = (missing[:1] if shared else missing).reshape(-1, h, w)
    share = frames.reshape(len(frames), -1).mean(axis=1)
    states = np.where(share == 0, NONE_MISSING, np.where(share == 1, ALL_MISSING, CODED))
    record: dict[str, Any] = {"layout": "shared" if shared else "per-band", "frames": "".join(states)}
    coded = frames[states == CODED]
    if not len(coded):
        record.update(extradata=0, packets=[])
        return record, []
    n_images = -(-len(coded) // max(1, IMAGE_ROWS // h))
    per_image = -(-len(coded) // n_images)  # images of equal height: at most n_images - 1 padding frames
    stacked = np.zeros((n_images * per_image, h, w), dtype=np.uint8)
    stacked[: len(coded)] = coded
    images = stacked.reshape(n_images, 1, per_image * h, w)
    spec = StreamSpec("ffv1", PIX_FMT[("ffv1", 1, 8)], per_image * h, w, ffv1_options(threads))
    packets, extradata = encode_stream(images, spec)
    record.update(spec=spec.to_json(), extradata=len(extradata), packets=[len(p) for p in packets])
    return record, [extradata, *packets]


def decode_mask(record: dict, extradata: bytes, packets: list[bytes], n: int, t: int, h: int, w: int) -> np.ndarray:
    """The mask (band, time, y, x) bool of ``record`` and its stream (extradata and packets)."""
    layers = 1 if record["layout"] == "shared" else n
    if "frames" not in record:  # format 3: one ffv1 frame per mask frame, all of them coded
        frames = decode_stream(packets, extradata, StreamSpec.from_json(record["spec"]), layers * t, 1, h, w)[:, 0]
        return np.broadcast_to(frames.reshape(layers, t, h, w).astype(bool), (n, t, h, w))
    states = np.array(list(record["frames"]))
    if len(states) != layers * t or not set(states) <= set(FRAME_STATES):
        raise ValueError(f"mask frame states {record['frames']!r} do not describe {layers} x {t} frames")
    frames = np.zeros((layers * t, h, w), dtype=bool)
    frames[states == ALL_MISSING] = True
    n_coded = int((states == CODED).sum())
    if n_coded:
        spec = StreamSpec.from_json(record["spec"])
        per_image = spec.height // h
        if per_image < 1:
            raise ValueError(f"mask images of {spec.height} rows cannot hold frames of {h} rows")
        images = decode_stream(packets, extradata, spec, -(-n_coded // per_image), 1, spec.height, w)
        frames[states == CODED] = images.reshape(-1, h, w)[:n_coded].astype(bool)
    return np.broadcast_to(frames.reshape(layers, t, h, w), (n, t, h, w))
