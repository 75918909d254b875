"""Embedding throughput benchmark (CUDA with bf16 autocast when present, else CPU fp32).

1. Prithvi-EO-2.0 300M-TL-size encoder (random weights, the released architecture) on T=4, 224x224
   chips: model-only chips/s and achieved TFLOP/s, then end-to-end chips/s from a cube Zarr store to
   written embeddings (``write_embeddings`` on a Dask LocalCluster) in the same run, and their ratio.
2. Presto and Galileo-nano pixels/s (model only; released weights when ``--shared`` has them).

    python -m benchmarks embeddings --quick            # small sizes (CPU)
    python -m benchmarks embeddings --batch 16 --e2e-chips 64 --json out.json   # GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from pipeline.embeddings import PRITHVI_CONFIGS, Galileo, Presto, PrithviViT


def vit_flops(n_tokens: int, dim: int, depth: int, mlp_ratio: float, patch_in: int) -> float:
    """Forward FLOPs (2 per multiply-add) of a ViT: per block 2N(4D² + 2·r·D²) + 4N²D, plus the patch conv."""
    per_block = 2 * n_tokens * (4 * dim * dim + 2 * mlp_ratio * dim * dim) + 4 * n_tokens * n_tokens * dim
    return depth * per_block + 2 * (n_tokens - 1) * dim * patch_in


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def bench_prithvi_model(model: PrithviViT, device: torch.device, batch: int, frames: int, repeats: int) -> dict:
    cfg = model.config
    x = torch.randn(batch, cfg.in_chans, frames, cfg.img_size, cfg.img_size, device=device)
    tc = torch.tensor([[2021.0, 30.0 + 60 * t] for t in range(frames)], device=device).expand(batch, -1, -1)
    lc = torch.tensor([[45.0, 10.0]], device=device).expand(batch, -1)
    with torch.inference_mode(), autocast(device):
        sec = timed(lambda: model(x, tc, lc), device, repeats)
    n_tokens = 1 + frames * (cfg.img_size // cfg.patch_size[1]) ** 2
    flops = vit_flops(n_tokens, cfg.embed_dim, cfg.depth, cfg.mlp_ratio, cfg.in_chans * int(np.prod(cfg.patch_size)))
    return {
        "batch": batch,
        "seconds_per_batch": sec,
        "chips_per_s": batch / sec,
        "gflop_per_chip": flops / 1e9,
        "tflop_per_s": flops * batch / sec / 1e12,
    }


def write_cube(path: Path, n_chips_x: int, frames: int, size: int) -> None:
    import pandas as pd
    import rioxarray  # noqa: F401
    import xarray as xr

    rng = np.random.default_rng(0)
    h, w = size, size * n_chips_x
    times = pd.date_range("2021-03-01", periods=frames, freq="60D").values.astype("datetime64[ns]")
    bands = ["blue", "green", "red", "nir08", "swir16", "swir22"]
    ds = xr.Dataset(
        {b: (("time", "y", "x"), rng.uniform(0.01, 0.4, (frames, h, w)).astype("float32")) for b in bands},
        coords={"time": times, "y": 5_000_000 - 30.0 * np.arange(h) - 15, "x": 400_000 + 30.0 * np.arange(w) + 15},
    )
    ds["valid"] = (("time", "y", "x"), np.ones((frames, h, w), "uint8"))
    ds = ds.rio.write_crs("EPSG:32632").chunk({"time": 1, "y": size, "x": size})
    ds.to_zarr(path, zarr_format=3, consolidated=True)


def bench_prithvi_e2e(model: PrithviViT, device: torch.device, chips: int, batch: int, frames: int, tmp: Path) -> dict:
    from distributed import Client, LocalCluster
    from safetensors.torch import save_file

    from pipeline.embeddings import write_embeddings

    weights = tmp / "prithvi-300m-tl-random.safetensors"
    save_file(
        {f"encoder.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights)
    )
    store = tmp / "cube.zarr"
    write_cube(store, chips, frames, model.config.img_size)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        # warm-up: load + (first) run on a one-chip cube, so the timing below is steady-state
        warm = tmp / "warm.zarr"
        write_cube(warm, 1, frames, model.config.img_size)
        write_embeddings(warm, "prithvi-eo-2.0-300m-tl", weights, device=str(device), batch_size=batch)
        t0 = time.perf_counter()
        out = write_embeddings(store, "prithvi-eo-2.0-300m-tl", weights, device=str(device), batch_size=batch)
        sec = time.perf_counter() - t0
    assert np.isfinite(out.values).all()
    return {"chips": chips, "seconds": sec, "chips_per_s": chips / sec}


def bench_presto(weights: Path | None, device: torch.device, n: int, steps: int, repeats: int) -> dict:
    model = (
        Presto.from_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        if weights
        else Presto().eval()
    )
    model = model.to(device)
    x = torch.rand(n, steps, 17, device=device)
    dw = torch.full((n, steps), 9, device=device)
    ll = torch.rand(n, 2, device=device) * 60
    month = torch.zeros(n, dtype=torch.long, device=device)
    with torch.inference_mode(), autocast(device):
        sec = timed(lambda: model(x, dw, ll, None, month), device, repeats)
    return {"pixels": n, "timesteps": steps, "pixels_per_s": n / sec, "weights": "released" if weights else "random"}


def bench_galileo(
    folder: Path | None, device: torch.device, chips: int, size: int, steps: int, p: int, repeats: int
) -> dict:
    if folder:
        cfg = json.loads((folder / "config.json").read_text())
        model = Galileo.from_state_dict(torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True), cfg)
    else:
        model = Galileo().eval()
    model = model.to(device)
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    args = (
        torch.rand(chips, size, size, steps, 13, device=device),
        z(chips, size, size, 16),
        z(chips, steps, 6),
        z(chips, 18),
        z(chips, size, size, steps, 7),
        torch.ones(chips, size, size, 3, device=device),
        torch.ones(chips, steps, 3, device=device),
        torch.tensor([[1.0, 0, 1, 1]], device=device).expand(chips, -1),
        torch.zeros(chips, steps, dtype=torch.long, device=device),
    )
    with torch.inference_mode(), autocast(device):
        sec = timed(lambda: model(*args, p).pooled_per_patch(), device, repeats)
    return {
        "chip": size,
        "patch_size": p,
        "timesteps": steps,
        "chips": chips,
        "pixels_per_s": chips * size * size / sec,
        "weights": "released" if folder else "random",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU-friendly)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--batch", type=int, default=None, help="Prithvi chips per forward")
    ap.add_argument("--e2e-chips", type=int, default=None, help="chips in the end-to-end cube")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quick = args.quick
    batch = args.batch or (1 if quick else 8)
    chips = args.e2e_chips or (2 if quick else 32)
    repeats = 1 if quick else 5
    frames = 4
    presto_w = args.shared / "models/presto/default_model.pt"
    galileo_dir = args.shared / "models/galileo-nano"
    torch.manual_seed(0)
    prithvi = PrithviViT(PRITHVI_CONFIGS["prithvi-eo-2.0-300m-tl"]).eval().to(device)
    res: dict = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "torch": torch.__version__,
        "params_prithvi": sum(p.numel() for p in prithvi.parameters()),
    }
    res["prithvi_model_only"] = bench_prithvi_model(prithvi, device, batch, frames, repeats)
    print(json.dumps(res, indent=1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res["prithvi_end_to_end"] = bench_prithvi_e2e(prithvi, device, chips, batch, frames, Path(tmp))
    res["e2e_over_model_only"] = res["prithvi_end_to_end"]["chips_per_s"] / res["prithvi_model_only"]["chips_per_s"]
    del prithvi
    res["presto"] = bench_presto(presto_w if presto_w.exists() else None, device, 2048 if quick else 65536, 12, repeats)
    res["galileo"] = bench_galileo(
        galileo_dir if galileo_dir.exists() else None, device, 4 if quick else 64, 16, 12, 4, repeats
    )
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
