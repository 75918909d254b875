"""The demo: every stage on the embedded demo catalog, end to end, as plain functions.

request -> search -> cube (store) -> monthly composite -> Presto embeddings ->
MC-ConcTD uncertainty maps from the demo's labelled points -> video-compressed copy.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import xarray as xr

from pipeline.chain.run import run_request
from pipeline.cube.cluster import dask_client
from pipeline.cube.source import open_cube
from pipeline.chain.run import CubeSummary
from pipeline.demo.archive import default_demo_archive
from pipeline.model import Progress
from pipeline.model import CubeRequest


@dataclass
class DemoSummary:
    """What the demo produced beyond the cube."""

    cube: CubeSummary
    monthly_store: str | None = None
    embeddings: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    compression: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def monthly_composite(store: Path, out: Path, coarsen: int = 4) -> Path:
    """Monthly median composite, averaged to ``coarsen`` x the cube's pixel size (keeps the demo's embedding step short)."""
    from pipeline.cube.compositing import composite
    from pipeline.store.zarr_store import write_store

    cube = open_cube(store)  # a video-compressed cube store opens band by band too
    monthly = composite(cube, "1MS", "median")
    if coarsen > 1:
        spatial = [v for v in monthly.data_vars if {"y", "x"} <= set(monthly[v].dims)]
        coarse = monthly[spatial].coarsen(y=coarsen, x=coarsen, boundary="trim").mean()
        coarse["valid"] = coarse["valid"] > 0
        monthly = coarse.assign_coords(spatial_ref=cube["spatial_ref"])
    monthly.attrs = {k: v for k, v in cube.attrs.items() if k.startswith(("eocube:", "title", "source"))}
    monthly.attrs["eocube:composite"] = json.dumps({"freq": "1MS", "method": "median", "source_store": str(store)})
    return write_store(monthly, out, {"time": 1, "y": 512, "x": 512}, overwrite=True)


def embed_presto(store: Path) -> dict:
    from pipeline.embeddings.engine import write_embeddings

    out = write_embeddings(store, "presto", None, name="embeddings", overwrite=True)
    return {"variable": "embeddings", "sizes": dict(out.sizes),
            **{k: out.attrs[k] for k in ("model", "weights_sha256", "pooling") if k in out.attrs}}


def uncertainty_maps(store: Path, labels: Path, out: Path) -> dict:
    from pipeline.uncertainty.maps import predict_map
    from pipeline.uncertainty.stage import fit_from_points

    n_steps = 6
    times = open_cube(store).time.values
    table = pd.read_csv(labels, parse_dates=["date"])
    # points need n_steps scenes at or before their date inside the cube's period
    inside = table[(table.date >= times[min(n_steps, times.size) - 1]) & (table.date <= times[-1])]
    if len(inside) < 20:
        raise ValueError(f"only {len(inside)} labelled points fall inside the cube's period; widen the dates")
    labels = out.with_name("labels-in-period.csv")
    inside.to_csv(labels, index=False, date_format="%Y-%m-%d")
    model = fit_from_points(store, labels, n_steps=n_steps, method="mc-conctd", seed=0)
    model.save(out.with_suffix(".model"))
    path = predict_map(model, store, out, name="vegetation_cover", overwrite=True)
    maps = xr.open_zarr(path)
    info = model.describe()
    return {"store": str(path), "model": str(out.with_suffix(".model")), "method": info["method"],
            "alpha_learned": info["alpha"], "calibration": info["calibration"], "n_points": info.get("n_points"),
            "mean_sigma_percent": round(float(maps["vegetation_cover_sigma"].mean()), 2)}


def compress_video(store: Path, out: Path) -> dict:
    from pipeline.compression.stage import compress_cube, summary_dict

    return summary_dict(compress_cube(store, out, target_psnr=45.0, quicklook=out.with_suffix(".quicklook.png"),
                                      overwrite=True))


def run_demo(request: CubeRequest, archive: Path | None = None, dask_address: str | None = None,
              progress: Progress | None = None) -> DemoSummary:
    """The whole pipeline on the demo: each later stage is skipped (with the reason) if it cannot run."""
    archive = archive or default_demo_archive()
    cube = run_request(request, archive=archive, dask_address=dask_address, progress=progress)
    summary = DemoSummary(cube=cube)
    with dask_client(dask_address):
        return _later_stages(summary, archive, progress)


def _later_stages(summary: DemoSummary, archive: Path, progress: Progress | None) -> DemoSummary:
    store = Path(summary.cube.store)
    out_dir = store.parent
    stages = ["monthly composite", "embeddings", "uncertainty", "compression"]
    done = 0

    def step(name: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("stages", done, len(stages))

    monthly = monthly_composite(store, out_dir / "demo-monthly.zarr")
    summary.monthly_store = str(monthly)
    step("monthly composite")
    from pipeline.embeddings.registry import SOURCES
    from pipeline.embeddings.weights import WeightsNotFoundError, resolve_weights

    try:  # the released weights may not be on this machine: say so and go on
        resolve_weights("presto", SOURCES["presto"])
    except WeightsNotFoundError as exc:
        summary.skipped["embeddings"] = str(exc).splitlines()[0]
    else:
        summary.embeddings = embed_presto(monthly)
    step("embeddings")
    summary.uncertainty = uncertainty_maps(store, archive / "labels.csv", out_dir / "demo-uncertainty.zarr")
    step("uncertainty")
    summary.compression = compress_video(store, out_dir / "demo-cube-video.zarr")
    step("compression")
    return summary
