"""The demo: its request file through the whole chain (cube, composite, embeddings, uncertainty, video), on a
shorter period of the demo archive, through a real Prefect API and a Dask LocalCluster; run twice, the second
run resumes and makes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from pipeline.store.open import open_cube

PERIOD = {"start": dt.date(2022, 3, 1), "end": dt.date(2022, 8, 31)}


def _run(demo_archive: Path, out: Path) -> dict:
    from flows.demo import demo_flow

    return demo_flow(out, archive=demo_archive, changes=PERIOD)


def test_the_demo_request_runs_every_stage_and_a_second_run_makes_nothing(
    demo_archive: Path, shared_dir: Path, tmp_path: Path, prefect_harness, monkeypatch
):
    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(shared_dir / "models"))
    result = _run(demo_archive, tmp_path)
    assert result["skipped"] == {}
    store = Path(result["store"])
    assert [p["name"] for p in result["products"]] == ["composite", "embeddings", "uncertainty", "video"]
    assert all(p["not_computed"] == {} and p["units_computed"] >= 1 for p in result["products"])
    cube = open_cube(store)
    months = set(xr.open_zarr(store, group="composite").time.dt.month.values.tolist())
    assert {3, 4, 5, 6, 7, 8} <= months <= {2, 3, 4, 5, 6, 7, 8}  # a MODIS 8-day composite may start in February
    emb = xr.open_zarr(store, group="embeddings")["embeddings"]
    assert emb.dims == ("y", "x", "dim") and emb.sizes["dim"] == 128 and np.isfinite(emb.values).mean() > 0.9
    maps = xr.open_zarr(store, group="uncertainty")
    mean, lower, upper = (maps[f"vegetation_cover_{k}"].values for k in ("mean", "lower", "upper"))
    ok = np.isfinite(mean)
    assert ok.mean() > 0.9 and np.all(lower[ok] <= mean[ok]) and np.all(mean[ok] <= upper[ok])
    assert dict(maps["vegetation_cover_mean"].sizes) == {"y": cube.sizes["y"], "x": cube.sizes["x"]}
    video = open_cube(store / "video")
    assert set(cube.attrs["eocube:bands"]) <= set(video.data_vars) and video["red"].shape == cube["red"].shape
    assert json.loads(xr.open_zarr(store, group="video").attrs["eocube:video"])["sample_psnr_db"] >= 44.0
    request = yaml.safe_load((tmp_path / "request.yaml").read_text())  # the completed request, beside the store
    assert request["uncertainty"]["model"].endswith("vegetation-cover.artefact") and request["output"] == str(store)
    again = _run(demo_archive, tmp_path)
    assert again["slices_written"] == 0 and again["units_written"] == 0


def test_the_demo_without_weights_says_what_is_missing_and_makes_the_rest(
    demo_archive: Path, tmp_path: Path, prefect_harness, monkeypatch
):
    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf"))
    result = _run(demo_archive, tmp_path)
    assert "default_model.pt" in result["skipped"]["embeddings"]
    assert [p["name"] for p in result["products"]] == ["composite", "uncertainty", "video"]
