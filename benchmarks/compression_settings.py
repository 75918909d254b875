"""Codec settings behind two defaults of pipeline.compression: the QP floor and ffv1's context model.

    python benchmarks/compression_settings.py [--shared ../shared]

1. **QP floor.** PSNR, rate and max error at QP 0, -6, -12, -18, -24 (below 0: x265 QP 0 with a flat
   scaling list of 16 / 2**k, see ``pipeline.compression.video``) on 16 frames of the real Sentinel-2
   Romania cube (0..20000 DN), a real Landsat 8 scene (7 SR bands, 256 x 256, 4 identical frames,
   0..65535 DN) and full-range white noise. The codec's floor (``QP_MIN``) is lifted for this run only.
2. **ffv1 context model.** Lossless size and decode speed with the small (``context=0``, the default) and
   the large (``context=1``) model on the Romania cube and both Landsat scenes (bit-exact round trips).
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr

import pipeline.compression.codec as codec
import pipeline.compression.video as video
from pipeline.compression.codec import CodecParams, decode_array, encode_array


def romania(shared: Path, frames: int | None = None) -> np.ndarray:
    ds = xr.open_dataset(shared / "data/sentinel2-romania/sentinel2_cube_subset_romania_10m.nc", mask_and_scale=False)
    return np.stack([ds[b].values[:frames] for b in ["B2", "B3", "B4", "B8"]])


def landsat(scene: Path) -> np.ndarray:
    """The scene's SR_B1..B7 as (band, 1, y, x) uint16 DN."""
    return np.stack([rasterio.open(f).read(1) for f in sorted(glob.glob(str(scene / "*SR_B[1-7].TIF")))])[:, None]


def qp_floor(cases: dict[str, tuple[np.ndarray, tuple[float, float]]]) -> None:
    codec.QP_MIN = video.QP_MIN = -24  # lifted for the sweep only
    print("| data | QP | bpppb | PSNR (dB, peak = range width) | max abs error |\n|---|---|---|---|---|")
    for name, (x, value_range) in cases.items():
        peak = value_range[1] - value_range[0]
        for qp in (0, -6, -12, -18, -24):
            data = encode_array(x, CodecParams(qp=qp, value_range=value_range))
            err = decode_array(data).astype(np.float64) - x
            quality = 10 * np.log10(peak ** 2 / np.mean(err ** 2))
            print(f"| {name} | {qp} | {8 * len(data) / x.size:.3f} | {quality:.2f} | {np.abs(err).max():.0f} |", flush=True)


def ffv1_context(cases: dict[str, np.ndarray]) -> None:
    default = video.ffv1_options
    print("\n| data | ffv1 context | bpppb | decode MB/s |\n|---|---|---|---|")
    for name, x in cases.items():
        for context in ("0", "1"):
            codec.ffv1_options = lambda threads, c=context: {**default(threads), "context": c}
            data = encode_array(x, CodecParams(mode="lossless", nodata=0))
            t0 = time.perf_counter()
            back = decode_array(data)
            seconds = time.perf_counter() - t0
            assert np.array_equal(back, x), "lossless round trip is not exact"
            print(f"| {name} | {context} | {8 * len(data) / x.size:.3f} | {x.size * 2 / 1e6 / seconds:.1f} |", flush=True)
    codec.ffv1_options = default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    args = ap.parse_args()
    scenes = sorted((args.shared / "data/landsat-c2l2").glob("LC08_*"))
    first = landsat(scenes[0])[:, :, :256, :256].repeat(4, axis=1)
    noise = np.random.default_rng(0).integers(0, 20000, size=(4, 8, 64, 64)).astype(np.uint16)
    qp_floor({"Romania (16 frames)": (romania(args.shared, 16), (0, 20000)),
              f"Landsat {scenes[0].name} (256 px)": (first, (0, 65535)),
              "white noise 0..20000": (noise, (0, 20000))})
    ffv1_context({"Romania (140 frames, one chunk)": romania(args.shared),
                  **{f"Landsat {s.name}": landsat(s) for s in scenes}})


if __name__ == "__main__":
    main()
