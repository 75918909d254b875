"""The JSON header of ``eocube.video`` bytes: written and read back.

Byte layout: ``b"EOCV"``, format version (uint8), header length (uint32 LE), then the UTF-8 JSON header
compressed with zlib. From format 4 on, zlib starts from the preset dictionary :data:`DICTIONARY`:
a text of typical header fields, so that the names, codec options and library versions every chunk
repeats cost a few bytes instead of their full text. The header is still the full JSON, needing
nothing outside the bytes but this module's constant. On small chunks at low rates the header is a
visible share of the bytes (``python -m benchmarks compression-settings --only overhead`` measures it).

:data:`DICTIONARY` belongs to format 4: changing it would make format 4 bytes unreadable, so a new
dictionary needs a new format version (kept here beside the old one).
"""

from __future__ import annotations

import json
import struct
import zlib

from pipeline.compression.video import CorruptStreamError

MAGIC, FORMAT_VERSION = b"EOCV", 5
#: Format 5 (current) may store the KLT as one rotation per date (``klt.angles``, Givens angle codes) instead
#: of one ``klt.matrix``; its header is compressed from format 4's dictionary. Format 4 compresses the
#: header from :data:`DICTIONARY` and codes only the mask frames with
#: some value missing (:mod:`pipeline.compression.mask_stream`); format 3 listed the frames with no value
#: at all (``empty_frames``); format 2 stored one byte length per HEVC stream instead of its packet sizes.
READABLE_VERSIONS = (1, 2, 3, 4, 5)

_X265 = (
    "log-level=error:info=0:keyint=32:min-keyint=32:open-gop=0:bframes=0:qp=12:ipratio=1:pbratio=1"
    ":pools=none:frame-threads=1:rdoq-level=2"
)
_FFV1 = {
    "codec": "ffv1",
    "pix_fmt": "gray",
    "height": 256,
    "width": 256,
    "options": {"level": "3", "coder": "range_tab", "context": "0", "slicecrc": "0", "threads": "1"},
}
_PARAMS = {
    "mode": "lossy",
    "qp": 12,
    "preset": "fast+rdo",
    "klt": True,
    "packing": "triplet",
    "value_range": [0.0, 1.0],
    "step": None,
    "nodata": None,
    "keyint": 32,
    "threads": 1,
}
_SAMPLE_HEADERS = [
    {
        "format": "eocube.video",
        "dtype": "uint8",
        "shape": [1, 32, 256, 256],
        "axes": ["time", "y", "x"],
        "mode": "lossless",
        "params": {**_PARAMS, "mode": "lossless"},
        "fill": 0.0,
        "empty_frames": [],
        "quantiser": {"offset": [0.0], "step": 1.0, "bits": 8, "precision": "float64"},
        "klt": None,
        "streams": [{"components": [0], "spec": _FFV1, "extradata": 190, "packets": [5400, 4999]}],
        "mask": None,
        "clipped": 0,
        "library": {"av": "18.1.0", "libavutil": "60.26.102", "libavcodec": "62.28.102"},
    },
    {
        "format": "eocube.video",
        "dtype": "float32",
        "shape": [4, 32, 256, 256],
        "axes": ["band", "time", "y", "x"],
        "mode": "lossy",
        "params": _PARAMS,
        "fill": None,
        "empty_frames": [],
        "quantiser": {"offset": [-0.3362548, -1.5905073], "step": 0.00096914073, "bits": 12, "precision": "float64"},
        "klt": {"mean": [0.12299062, 0.13376422], "matrix": [[0.56332356, 0.52224207], [-0.25869784, -0.17666596]]},
        "streams": [
            {
                "components": [0, 1, 2],
                "spec": {
                    "codec": "libx265",
                    "pix_fmt": "gbrp12le",
                    "height": 256,
                    "width": 256,
                    "options": {"preset": "fast", "tune": "psnr", "x265-params": _X265},
                },
                "extradata": 0,
                "bytes": 171338,
            },
            {
                "components": [3],
                "spec": {
                    "codec": "libx265",
                    "pix_fmt": "gray12le",
                    "height": 256,
                    "width": 256,
                    "options": {
                        "preset": "fast",
                        "tune": "psnr",
                        "x265-params": _X265,
                        "eocube-flat-scaling-list": "11",
                    },
                },
                "extradata": 0,
                "bytes": 12639,
            },
            {"components": [3], "constant": [-8.768695e-06]},
        ],
        "mask": {
            "layout": "shared",
            "frames": "00000000000000000000000000000000",
            "spec": _FFV1,
            "extradata": 190,
            "packets": [52],
        },
        "clipped": 0,
        "library": {"av": "18.1.0", "libavutil": "60.26.102", "libavcodec": "62.28.102"},
    },
]
#: zlib's preset dictionary for format 4 and 5 headers (never to change; see the module docstring)
DICTIONARY = "".join(json.dumps(h, separators=(",", ":")) for h in _SAMPLE_HEADERS).encode()


def pack_header(header: dict) -> bytes:
    """Magic, format version, length and the compressed JSON of ``header``: the start of the bytes."""
    packer = zlib.compressobj(9, zdict=DICTIONARY)
    blob = packer.compress(json.dumps(header, separators=(",", ":")).encode()) + packer.flush()
    return MAGIC + struct.pack("<BI", FORMAT_VERSION, len(blob)) + blob


def read_header(data: bytes) -> tuple[dict, int]:
    """The JSON header of encoded bytes and the offset of the first stream byte."""
    data = bytes(data)
    if len(data) < 9 or data[:4] != MAGIC:
        raise CorruptStreamError("not eocube.video bytes (bad magic)")
    version, size = struct.unpack("<BI", data[4:9])
    if version not in READABLE_VERSIONS:
        raise CorruptStreamError(
            f"eocube.video format version {version} not supported "
            f"(this library reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    try:
        unpacker = zlib.decompressobj(zdict=DICTIONARY) if version >= 4 else zlib.decompressobj()
        text = unpacker.decompress(data[9 : 9 + size]) + unpacker.flush()
        if not unpacker.eof:
            raise zlib.error("header ends early")
        header = json.loads(text)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStreamError(f"corrupt eocube.video header: {exc}") from None
    return header, 9 + size
