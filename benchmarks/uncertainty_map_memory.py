"""Peak memory of uncertainty-map prediction against map size (issue: 10⁷ pixels in bounded memory).

Builds synthetic cube stores of ``size × size`` pixels (float32 bands over ``(time, y, x)``, Zarr v3),
fits one small MC-ConcTD model on random samples, then predicts the six maps of every store with
:func:`pipeline.uncertainty.maps.predict_map`, each size in a fresh process so that its peak RSS is
its own. Prints pixels, seconds, peak RSS and the ratios to the smallest map side by side.

    python -m benchmarks uncertainty-map-memory --sizes 1000 3163 --block 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.uncertainty.card import load_model, save_model

BANDS = ("red", "nir08")
N_STEPS = 3


def build_store(path: Path, size: int, seed: int = 0) -> None:
    """A ``(time, y, x)`` float32 cube of ``BANDS`` with 10 % NaN, written chunk by chunk with Dask."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    rs = da.random.RandomState(seed)
    chunks = (N_STEPS, 512, 512)
    data = {}
    for k, band in enumerate(BANDS):
        values = (0.1 + 0.2 * k + 0.05 * rs.standard_normal((N_STEPS, size, size), chunks=chunks)).astype(np.float32)
        data[band] = (("time", "y", "x"), da.where(rs.random_sample(values.shape, chunks=chunks) < 0.1, np.nan, values))
    coords = {
        "time": pd.date_range("2022-01-01", periods=N_STEPS, freq="MS"),
        "y": 5e6 - 20.0 * np.arange(size),
        "x": 4e5 + 20.0 * np.arange(size),
    }
    xr.Dataset(data, coords=coords).to_zarr(path, mode="w", zarr_format=3, consolidated=False)


def fit_model(path: Path) -> None:
    """A small MC-ConcTD model on random ``(sample, time, feature)`` data, saved to ``path``."""
    from pipeline.uncertainty import fit

    rng = np.random.default_rng(0)
    X = rng.normal(0.2, 0.1, (2000, N_STEPS, len(BANDS)))
    y = 40 * X[:, :, 1].mean(axis=1) - 10 * X[:, :, 0].mean(axis=1) + rng.normal(0, 1, 2000)
    model = fit(X, y, method="mc-conctd", hidden=16, epochs=20, patience=5, mc_samples=8, seed=0)
    model.metadata["variables"] = list(BANDS)
    save_model(model, path)


def predict_child(store: Path, model_dir: Path, out: Path, block: int) -> None:
    """Predict the maps of ``store``; print seconds and this process's peak RSS as JSON."""
    from pipeline.uncertainty.maps import predict_map

    model = load_model(model_dir)[0]
    t0 = time.perf_counter()
    predict_map(
        model,
        store,
        out,
        block=block,
        progress=lambda d, t: print(f"  block {d}/{t}", end="\r", file=sys.stderr, flush=True),
    )
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3163], help="map sides in pixels")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/uncertainty_maps"))
    ap.add_argument("--child", nargs=3, type=Path, metavar=("STORE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        predict_child(*args.child, args.block)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.work / "model"
    fit_model(model_dir)
    rows = []
    for size in args.sizes:
        store = args.work / f"cube-{size}.zarr"
        if not store.exists():
            print(f"building {store} ({size} x {size} px)", flush=True)
            build_store(store, size)
        # the child runs this file as a script (it imports nothing of benchmarks/), whatever the cwd
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--block",
                str(args.block),
                "--child",
                str(store),
                str(model_dir),
                str(args.work / f"maps-{size}.zarr"),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        rows.append({"size": size, "pixels": size * size, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(f"\n{rows[-1]}", flush=True)
    base = rows[0]
    print(f"\nblock {args.block}, MC-ConcTD, {N_STEPS} steps x {len(BANDS)} bands, mc_samples 8\n")
    print("| map | pixels | seconds | peak RSS (MB) | pixels ratio | seconds ratio | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} x {r['size']} | {r['pixels']:.2e} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['pixels'] / base['pixels']:.1f} | {r['seconds'] / base['seconds']:.2f} | "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |"
        )


if __name__ == "__main__":
    main()
