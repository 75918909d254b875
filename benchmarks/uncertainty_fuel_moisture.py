"""Fuel-moisture experiment: deterministic, MC-Dropout, MC-TD (α = 0.1..0.5), MC-ConcTD, ensemble.

Real S1/S2/ERA5/SRTM monthly series (3 steps × 18 inputs, LFMC % target), the site-based
``is_test`` split of the Presto paper. Inside ``fit``, validation and calibration hold out whole
training sites. Inputs: raw bands, or per-step Presto embeddings (each month embedded alone,
giving ``[N, 3, 128]``). Prints a Markdown table of mean ± std over seeds and writes JSON + PNGs.

    python -m benchmarks uncertainty-fuel-moisture --inputs raw --seeds 5 --out benchmarks/uncertainty/raw
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.uncertainty_plots import reliability_diagram, sigma_vs_error
from pipeline.uncertainty import evaluate, fit
from pipeline.uncertainty.datasets import load_fuel_moisture

METRICS = ("rmse", "r2", "mae", "bias", "nll", "crps", "picp", "mpiw", "ence", "uce", "spearman_sigma_abs_error")


def presto_step_embeddings(d, weights: Path) -> np.ndarray:
    """Per-step Presto embeddings ``[N, T, 128]``: each month embedded as a one-step series."""
    from pipeline.embeddings import presto_embed_timeseries

    steps = [
        presto_embed_timeseries(
            d.X[:, t : t + 1],
            d.month[:, t : t + 1],
            d.latlon,
            dynamic_world=d.dynamic_world[:, t : t + 1],
            weights=weights,
            device="cpu",
        )
        for t in range(d.X.shape[1])
    ]
    return np.stack(steps, axis=1).astype(np.float64)


def runs(sweep: bool) -> list[tuple[str, str, dict]]:
    """``(label, method, options)`` of every configuration."""
    if sweep:
        return [
            (f"mc-conctd {objective} λ={w:g}", "mc-conctd", {"regularizer_weight": w, "alpha_objective": objective})
            for objective in ("elbo", "heldout")
            for w in (0.01, 0.1, 1, 10, 100, 1000)
        ]
    return (
        [("deterministic", "deterministic", {}), ("mc-dropout", "mc-dropout", {})]
        + [(f"mc-td α={a:.1f}", "mc-td", {"alpha": a}) for a in (0.1, 0.2, 0.3, 0.4, 0.5)]
        + [
            ("mc-conctd", "mc-conctd", {}),
            ("mc-conctd (ELBO α)", "mc-conctd", {"alpha_objective": "elbo"}),
            ("ensemble (5)", "ensemble", {}),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--inputs", choices=("raw", "presto"), default="raw")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="MC-ConcTD regulariser-weight sweep (both α objectives) instead of the comparison",
    )
    ap.add_argument(
        "--simulated-gaps",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="mark this fraction of (sample, month) steps missing, train and test (seeded), like cloud gaps",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/uncertainty/out"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    d = load_fuel_moisture(args.shared / "data" / "fuel-moisture")
    X = (
        d.X
        if args.inputs == "raw"
        else presto_step_embeddings(d, args.shared / "models" / "presto" / "default_model.pt")
    )
    tr, te = ~d.is_test, d.is_test
    observed = np.ones(X.shape, dtype=bool)
    observed[np.random.default_rng(123).random(X.shape[:2]) < args.simulated_gaps] = False
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.perf_counter()
    for label, method, opts in runs(args.sweep):
        per_seed, alphas, factors = [], [], []
        for seed in range(args.seeds):
            model = fit(X[tr], d.y[tr], observed[tr], method=method, groups=d.site[tr], seed=seed, **opts)
            p = model.predict(X[te], observed[te])
            per_seed.append(evaluate(d.y[te], p.mean, p.sigma, p.lower, p.upper).as_dict())
            if model.learned_alpha is not None:
                alphas.append(model.learned_alpha[0])
            factors.append((model.calibration.aleatoric_scale, model.calibration.epistemic_scale))
            if seed == 0:
                curves[label] = (p.mean, p.sigma)
                if label == "mc-conctd" and not args.sweep:
                    sigma_vs_error(d.y[te], p.mean, p.sigma, args.out / "sigma_vs_error_mc-conctd.png", "MC-ConcTD")
        results[label] = {
            m: (float(np.mean([r[m] for r in per_seed])), float(np.std([r[m] for r in per_seed]))) for m in METRICS
        }
        if alphas:
            results[label]["learned_alpha"] = (float(np.mean(alphas)), float(np.std(alphas)))
        k = np.array(factors)  # calibration factors on σ_a and σ_e; deterministic nets have no spread to scale
        results[label]["k_aleatoric"] = (float(k[:, 0].mean()), float(k[:, 0].std()))
        if method != "deterministic":
            results[label]["k_epistemic"] = (float(k[:, 1].mean()), float(k[:, 1].std()))
        print(f"{label}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.sweep:
        reliability_diagram(
            d.y[te],
            {
                k: v
                for k, v in curves.items()
                if k in ("deterministic", "mc-dropout", "mc-td α=0.2", "mc-conctd", "ensemble (5)")
            },
            args.out / "reliability.png",
        )
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "inputs": args.inputs,
                "seeds": args.seeds,
                "simulated_gaps": args.simulated_gaps,
                "seconds": time.perf_counter() - t0,
                "results": results,
            },
            indent=2,
        )
    )
    cols = ["rmse", "r2", "nll", "crps", "picp", "mpiw", "ence", "spearman_sigma_abs_error"]
    print(
        f"\ninputs: {args.inputs}, simulated gaps {args.simulated_gaps:.0%}, {args.seeds} seeds, "
        f"{time.perf_counter() - t0:.0f} s\n"
    )
    extra = ["learned_alpha", "k_aleatoric", "k_epistemic"]
    print("| method | " + " | ".join(cols + extra) + " |")
    print("|---" * (len(cols) + len(extra) + 1) + "|")
    for label, r in results.items():
        cells = [f"{r[c][0]:.3f} ± {r[c][1]:.3f}" if c in r else "–" for c in cols + extra]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
