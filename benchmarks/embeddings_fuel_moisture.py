"""Presto fuel-moisture quality check (Presto paper, arXiv 2304.14065, Table 10).

Embeds all 2,313 samples of ``shared/data/fuel-moisture`` with the released Presto weights exactly as
the authors' ``FuelMoistureEval`` (raw 18-band rows normalised by ``S1_S2_ERA5_SRTM.normalize``,
real months and Dynamic World, mask=None), fits sklearn ``RandomForestRegressor(random_state=seed)``
(and ``LinearRegression``) on the ``is_test == 0`` rows and reports the test RMSE for seeds 0, 42, 84.
Paper: Presto RF 25.98 ± 0.66, LinReg 28.20, Presto fine-tuned 25.28 ± 0.30.

    python -m benchmarks embeddings-fuel-moisture [--shared ../shared] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PAPER = {"random_forest": 25.98, "linear_regression": 28.20, "finetuned": 25.28}
SEEDS = (0, 42, 84)


def load_fuel_moisture(folder: Path) -> dict[str, np.ndarray]:
    """The fuel-moisture arrays (raw ``x [n, 3, 18]``, ``month``, ``latlon``, ``dynamic_world``, ``target``, ``is_test``)."""
    names = {
        "x": "s1_s2_era5_srtm",
        "month": "month",
        "latlon": "latlon",
        "dynamic_world": "dynamic_world",
        "target": "target",
        "is_test": "is_test",
    }
    return {k: np.load(folder / f"{v}.npy") for k, v in names.items()}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def evaluate(shared: Path) -> dict:
    """Embed, fit the heads and return the RMSE figures."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    from pipeline.embeddings import presto_embed_timeseries

    data = load_fuel_moisture(shared / "data" / "fuel-moisture")
    t0 = time.perf_counter()
    emb = presto_embed_timeseries(
        data["x"],
        data["month"],
        data["latlon"],
        dynamic_world=data["dynamic_world"],
        weights=shared / "models" / "presto" / "default_model.pt",
        device="cpu",
    )
    embed_s = time.perf_counter() - t0
    test = data["is_test"].astype(bool)
    y = data["target"]
    rf = []
    for seed in SEEDS:
        model = RandomForestRegressor(random_state=seed, n_jobs=2).fit(emb[~test], y[~test])
        rf.append(rmse(model.predict(emb[test]), y[test]))
    lin = rmse(LinearRegression().fit(emb[~test], y[~test]).predict(emb[test]), y[test])
    return {
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "embed_seconds": embed_s,
        "rf_rmse_per_seed": dict(zip(map(str, SEEDS), rf, strict=True)),
        "rf_rmse_mean": float(np.mean(rf)),
        "rf_rmse_std": float(np.std(rf)),
        "linreg_rmse": lin,
        "paper": PAPER,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    res = evaluate(args.shared)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if abs(res["rf_rmse_mean"] - PAPER["random_forest"]) <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
