"""Downstream check of lossy video compression: do Presto embeddings and uncertainty maps change
by less than the models' own Monte-Carlo spread?

    python -m benchmarks compression-downstream [--target-psnr 45 50] [--mc 8] [--alpha 0.2]

On the demo catalog (2022-03-01..2022-08-31, 20 m, every sensor) it builds the cube, writes a
video-compressed copy at the demo's default lossy setting (rate control to a 45 dB target; more
targets with ``--target-psnr``), and
runs the same downstream stages on the original and on the decompressed cube (every stage opens
the compressed store directly):

* **uncertainty**: the demo's MC-ConcTD model (fitted once, on the original cube's labelled
  points) predicts maps from both cubes. Compared: |mean(decoded) - mean(original)| per pixel
  against the model's epistemic sigma (the spread of its L temporal-dropout predictions).
* **embeddings**: Presto on the monthly median composite of each cube. Compared:
  ||e(decoded) - e(original)||_2 per pixel against the Presto embeddings' own spread under Monte-Carlo
  temporal dropout (``--mc`` draws, each month of each pixel dropped with probability
  ``--alpha``; spread = ||per-dimension standard deviation||_2).

Prints, per target, the medians, the ratio difference / spread and the share of pixels where
the difference is below the spread (for the uncertainty maps also against the calibrated total
sigma); writes ``result.json`` in the work folder. Needs the Presto weights
(``EOCUBE_WEIGHTS_DIR``, default ``../shared/models`` when present).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.uncertainty.card import load_model

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "downstream"


def compare(diff: np.ndarray, spread: np.ndarray) -> dict[str, float]:
    """Summary of a per-pixel difference against a per-pixel spread (NaN pixels ignored)."""
    ok = np.isfinite(diff) & np.isfinite(spread) & (spread > 0)
    d, s = diff[ok], spread[ok]
    return {
        "pixels": int(ok.sum()),
        "median_difference": float(np.median(d)),
        "median_spread": float(np.median(s)),
        "median_ratio": float(np.median(d / s)),
        "p95_ratio": float(np.percentile(d / s, 95)),
        "share_below_spread": float(np.mean(d < s)),
    }


def embedding_spread(monthly: xr.Dataset, draws: int, alpha: float, seed: int = 0) -> np.ndarray:
    """Per-pixel ||std over MC temporal-dropout draws||_2 of the Presto embeddings."""
    from pipeline.embeddings.engine import embed_cube

    rng = np.random.default_rng(seed)
    valid = monthly["valid"].astype(bool)
    samples = []
    for _ in range(draws):
        keep = xr.DataArray(rng.random(valid.shape) >= alpha, dims=valid.dims, coords=valid.coords)
        samples.append(embed_cube(monthly.assign(valid=valid & keep), "presto").values)
    return np.linalg.norm(np.std(np.stack(samples), axis=0), axis=-1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--target-psnr",
        type=float,
        nargs="+",
        default=[45.0],
        help="dB (peak = reflectance 1.0); 45 is the demo's default",
    )
    ap.add_argument("--mc", type=int, default=8, help="MC temporal-dropout draws for the embedding spread")
    ap.add_argument("--alpha", type=float, default=0.2, help="drop probability per month and pixel")
    ap.add_argument("--work", type=Path, default=WORK)
    args = ap.parse_args(argv)
    shared_models = ROOT.parent / "shared" / "models"
    if "EOCUBE_WEIGHTS_DIR" not in os.environ and shared_models.exists():
        os.environ["EOCUBE_WEIGHTS_DIR"] = str(shared_models)

    from flows.demo import monthly_composite_task, uncertainty_task
    from pipeline.chain.run import run_request
    from pipeline.compression.stage import compress_cube
    from pipeline.cube import dask_client
    from pipeline.demo.archive import DEMO_SITE, ensure_demo_archive
    from pipeline.embeddings.engine import embed_cube
    from pipeline.model import CubeRequest
    from pipeline.store.open import open_cube
    from pipeline.uncertainty.maps import predict_map

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    with dask_client(n_workers=2, threads_per_worker=1):
        archive = ensure_demo_archive()
        request = CubeRequest(
            catalog="demo",
            bbox=DEMO_SITE.aoi_lonlat(),
            start=dt.date(2022, 3, 1),
            end=dt.date(2022, 8, 31),
            resolution=20.0,
            output=work / "cube.zarr",
        )
        original = Path(run_request(request, archive).store)
        fitted = uncertainty_task.fn(original, archive / "labels.csv", work / "maps-original.zarr")
        model = load_model(fitted["model"])[0]
        name = "vegetation_cover"
        maps_o = open_cube(fitted["store"])
        monthly_o = open_cube(monthly_composite_task.fn(original, work / "monthly-original.zarr"))
        e_o = embed_cube(monthly_o, "presto").values
        e_spread = embedding_spread(monthly_o, args.mc, args.alpha)
        results = []
        for target in args.target_psnr:
            video = compress_cube(original, work / f"cube-video-{target:g}dB.zarr", target_psnr=target)
            maps_d = open_cube(predict_map(model, video.store, work / f"maps-{target:g}dB.zarr", name=name))
            diff = np.abs(maps_d[f"{name}_mean"].values - maps_o[f"{name}_mean"].values)
            monthly_d = open_cube(monthly_composite_task.fn(Path(video.store), work / f"monthly-{target:g}dB.zarr"))
            e_d = embed_cube(monthly_d, "presto").values
            results.append(
                {
                    "target_psnr_db": target,
                    "compression": {
                        "qp": video.qp,
                        "bpppb": round(video.bpppb, 4),
                        "psnr_db": round(video.psnr, 2),
                        "psnr_peak": video.psnr_peak,
                        "ratio": round(video.raw_bytes / video.stored_bytes, 1),
                    },
                    "uncertainty_mean_vs_epistemic_sigma": compare(diff, maps_o[f"{name}_sigma_epistemic"].values),
                    "uncertainty_mean_vs_total_sigma": compare(diff, maps_o[f"{name}_sigma"].values),
                    "presto_embedding_vs_mc_td_spread": compare(np.linalg.norm(e_d - e_o, axis=-1), e_spread),
                }
            )

    for r in results:
        c = r["compression"]
        print(
            f"target {r['target_psnr_db']:g} dB: QP {c['qp']}, {c['bpppb']} bpppb, PSNR {c['psnr_db']} dB "
            f"(peak {c['psnr_peak']}), {c['ratio']}x"
        )
        for key in (
            "uncertainty_mean_vs_epistemic_sigma",
            "uncertainty_mean_vs_total_sigma",
            "presto_embedding_vs_mc_td_spread",
        ):
            m = r[key]
            print(
                f"  {key}: median difference {m['median_difference']:.4g}, median spread {m['median_spread']:.4g}, "
                f"median ratio {m['median_ratio']:.3f} (p95 {m['p95_ratio']:.3f}), "
                f"{100 * m['share_below_spread']:.1f} % of {m['pixels']} pixels below the spread"
            )
    (work / "result.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "alpha_learned": fitted.get("alpha_learned"),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
