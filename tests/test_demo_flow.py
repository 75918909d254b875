"""The whole demo flow (cube -> composite -> embeddings -> uncertainty -> compression) on a
shorter period of the demo archive, through a real Prefect API and Dask LocalCluster."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.demo.archive import DEMO_SITE
from pipeline.model import CubeRequest


def _run(demo_archive: Path, out: Path):
    from flows.demo import demo_flow

    request = CubeRequest(catalog="demo", bbox=DEMO_SITE.aoi_lonlat(), start=dt.date(2022, 3, 1),
                          end=dt.date(2022, 8, 31), resolution=20.0, output=out / "demo-cube.zarr")
    return demo_flow(request, archive=demo_archive)


def test_demo_flow_runs_every_stage(demo_archive: Path, shared_dir: Path, tmp_path: Path, prefect_harness,
                                    monkeypatch):
    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(shared_dir / "models"))
    summary = _run(demo_archive, tmp_path)
    assert summary.skipped == {}
    cube = xr.open_zarr(summary.cube.store)
    monthly = xr.open_zarr(summary.monthly_store)
    months = set(monthly.time.dt.month.values.tolist())
    assert {3, 4, 5, 6, 7, 8} <= months <= {2, 3, 4, 5, 6, 7, 8}  # a MODIS 8-day composite may start in February
    emb = monthly["embeddings"]
    assert emb.dims == ("y", "x", "dim") and emb.sizes["dim"] == 128
    assert np.isfinite(emb.values).mean() > 0.9
    maps = xr.open_zarr(summary.uncertainty["store"])
    mean, lower, upper = (maps[f"vegetation_cover_{k}"].values for k in ("mean", "lower", "upper"))
    ok = np.isfinite(mean)
    assert ok.mean() > 0.9 and np.all(lower[ok] <= mean[ok]) and np.all(mean[ok] <= upper[ok])
    assert maps.sizes == {"y": cube.sizes["y"], "x": cube.sizes["x"]}
    video = xr.open_zarr(summary.compression["store"])
    assert summary.compression["psnr"] >= 44.0  # rate control targets 45 dB on sampled chunks
    assert "valid" in cube.data_vars and "red" in cube.data_vars
    packed = video["reflectance"]  # the video store packs the reflectance bands along `band`
    assert "red" in packed.band.values.tolist()
    assert packed.sel(band="red").shape == cube["red"].shape


def test_demo_flow_without_weights_says_what_is_missing(demo_archive: Path, tmp_path: Path, prefect_harness,
                                                        monkeypatch):
    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf"))
    summary = _run(demo_archive, tmp_path)
    assert "default_model.pt" in summary.skipped["embeddings"]
    assert Path(summary.uncertainty["store"]).exists() and Path(summary.compression["store"]).exists()
