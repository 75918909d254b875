"""Throughput of QA decoding and masking on real QA bands (numpy vs lazy dask).

Usage: python -m benchmarks sensors-qa [--shared ../shared] [--repeat 3]

Inputs: the Sentinel-2 SCL cube (140 x 100 x 100) and a Landsat QA_PIXEL scene (512 x 512)
tiled 8 x 8 in time to 64 x 512 x 512 = 16.8 Mpx. Prints Mpx/s per case (best of --repeat).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import dask
import numpy as np
import rasterio
import xarray as xr

from pipeline.sensors import MaskPolicy, decode_qa, invalid_mask


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    dask.config.set(scheduler="threads", num_workers=2)

    with xr.open_dataset(next((args.shared / "data/sentinel2-romania").glob("*.nc"))) as ds:
        scl = ds["SCL"].astype(np.uint8).load()
    with rasterio.open(
        next((args.shared / "data/landsat-c2l2/LC08_L2SP_005009_20150710").glob("*QA_PIXEL.TIF"))
    ) as src:
        scene = src.read(1)
    landsat = xr.DataArray(np.tile(scene[None], (64, 1, 1)), dims=("time", "y", "x"))

    cases = {
        "landsat decode_qa (numpy)": (lambda: decode_qa("landsat-c2-l2", "qa_pixel", landsat).compute(), landsat.size),
        "landsat invalid_mask (numpy)": (lambda: invalid_mask("landsat-c2-l2", "qa_pixel", landsat), landsat.size),
        "landsat invalid_mask (dask 1x512x512)": (
            lambda: invalid_mask("landsat-c2-l2", "qa_pixel", landsat.chunk({"time": 1})).compute(),
            landsat.size,
        ),
        "landsat invalid_mask + 90 m dilation (numpy)": (
            lambda: invalid_mask("landsat-c2-l2", "qa_pixel", landsat, MaskPolicy(dilation_m=90), 30.0),
            landsat.size,
        ),
        "landsat invalid_mask + 90 m dilation (dask 1x512x512)": (
            lambda: invalid_mask(
                "landsat-c2-l2", "qa_pixel", landsat.chunk({"time": 1}), MaskPolicy(dilation_m=90), 30.0
            ).compute(),
            landsat.size,
        ),
        "s2 SCL invalid_mask (numpy)": (lambda: invalid_mask("sentinel-2-l2a", "SCL", scl), scl.size),
    }
    print(f"{'case':56s} {'Mpx':>6s} {'s':>7s} {'Mpx/s':>8s}")
    for name, (fn, n) in cases.items():
        s = _best(fn, args.repeat)
        print(f"{name:56s} {n / 1e6:6.1f} {s:7.3f} {n / 1e6 / s:8.1f}")


if __name__ == "__main__":
    main()
