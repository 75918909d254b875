"""Pipeline stage on a small synthetic cube store: points -> fit -> maps (API, CLI, Prefect flow)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import xarray as xr
from pyproj import Transformer
from typer.testing import CliRunner

from pipeline.cli.uncertainty import app
from pipeline.uncertainty.card import load_model, save_model
from pipeline.uncertainty.cube import open_store, read_points, sample_points
from pipeline.uncertainty.maps import predict_map
from pipeline.uncertainty.stage import fit_from_points

torch.set_num_threads(1)
CRS = "EPSG:32633"
NY, NX, NT = 24, 20, 6
FAST = dict(hidden=16, epochs=40, patience=10, mc_samples=10)


def _truth(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    return 50 * np.nanmean(nir - red, axis=0) + 20


@pytest.fixture(scope="module")
def cube_store(tmp_path_factory):
    """A (time, y, x) cube with red/nir/valid, some cloudy pixels and one fully masked pixel."""
    rng = np.random.default_rng(0)
    x = 500_000 + 10 * np.arange(NX) + 5.0
    y = 5_000_000 - 10 * np.arange(NY) - 5.0
    time = pd.date_range("2024-01-01", periods=NT, freq="16D").values.astype("datetime64[ns]")
    red = rng.uniform(0.02, 0.2, (NT, NY, NX)).astype(np.float32)
    nir = (red + rng.uniform(0.0, 0.4, (NT, NY, NX))).astype(np.float32)
    valid = rng.random((NT, NY, NX)) > 0.15
    valid[:, 0, 0] = False
    red[~valid], nir[~valid] = np.nan, np.nan
    ds = xr.Dataset(
        {
            "red": (("time", "y", "x"), red),
            "nir": (("time", "y", "x"), nir),
            "valid": (("time", "y", "x"), valid.astype(np.uint8)),
        },
        coords={
            "time": time,
            "y": y,
            "x": x,
            "sensor": ("time", np.array(["sentinel-2"] * NT, dtype=object).astype(str)),
        },
    )
    ds = ds.rio.write_crs(CRS)
    path = tmp_path_factory.mktemp("cube") / "cube.zarr"
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    return path, ds


@pytest.fixture(scope="module")
def points_csv(cube_store, tmp_path_factory):
    _, ds = cube_store
    rows, cols = np.meshgrid(np.arange(1, NY), np.arange(NX), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(ds.x.values[cols], ds.y.values[rows])
    t = _truth(ds.red.values, ds.nir.values)[rows, cols]
    path = tmp_path_factory.mktemp("pts") / "points.csv"
    pd.DataFrame({"lon": lon, "lat": lat, "lfmc": t, "time": "2024-03-31", "site": (rows // 2).astype(str)}).to_csv(
        path, index=False
    )
    return path


def test_sample_points_reads_the_right_pixels_and_window(cube_store, points_csv):
    path, ds = cube_store
    pts = read_points(points_csv, target="lfmc")
    X, valid, y = sample_points(open_store(path), pts.table.iloc[:5], ["red", "nir"], n_steps=4)
    # 2024-03-31 is after steps 0..5 at 16-day spacing up to 2024-03-17 (index 5): window = steps 2..5
    assert X.shape == (5, 4, 2)
    np.testing.assert_allclose(X[0, :, 1], ds.nir.values[2:6, 1, 0], equal_nan=True)
    assert np.array_equal(valid[0, :, 0], ds.valid.values[2:6, 1, 0].astype(bool))
    np.testing.assert_allclose(y, pts.table["target"].to_numpy()[:5])
    bad = pts.table.iloc[:1].assign(lon=0.0, lat=0.0)
    with pytest.raises(ValueError, match="outside the store's grid"):
        sample_points(open_store(path), bad, ["red"], 4)
    with pytest.raises(ValueError, match="no variable"):
        sample_points(open_store(path), pts.table.iloc[:1], ["swir16"], 4)


def test_fit_and_predict_map_in_blocks(cube_store, points_csv, tmp_path):
    path, ds = cube_store
    model = fit_from_points(
        path, points_csv, target="lfmc", n_steps=NT, group_column="site", method="mc-td", alpha=0.2, **FAST
    )
    assert model.metadata["variables"] == ["red", "nir"]
    assert len(model.metadata["training_sha256"]) == 64
    saved = load_model(save_model(model, tmp_path / "model"))[0]
    out = predict_map(saved, path, tmp_path / "maps.zarr", block=7)
    maps = xr.open_zarr(out)
    mean = maps["prediction_mean"].values
    assert mean.shape == (NY, NX) and np.isnan(mean[0, 0]) and np.isfinite(mean[1:, :]).all()
    lo, hi, sig = (maps[f"prediction_{k}"].values[1:] for k in ("lower", "upper", "sigma"))
    assert np.all(lo <= hi) and np.all(sig > 0)
    attrs = maps["prediction_mean"].attrs
    assert attrs["eocube:uncertainty_method"] == "mc-td" and json.loads(attrs["eocube:alpha"]) == 0.2
    assert attrs["eocube:training_sha256"] == model.metadata["training_sha256"]
    assert "split-conformal" in attrs["eocube:calibration"] and attrs["eocube:mc_samples"] == 10
    assert maps.rio.crs.to_epsg() == 32633
    # blockwise maps equal a direct prediction of the same pixels (same MC seed, one block = whole map)
    torch.manual_seed(0)
    whole = predict_map(saved, path, tmp_path / "whole.zarr", block=64)
    torch.manual_seed(0)
    X = np.moveaxis(np.stack([ds.red.values, ds.nir.values], -1), 0, 2).reshape(NY * NX, NT, 2)
    direct = saved.predict(X[1:]).mean  # pixel (0, 0) has no valid observation
    np.testing.assert_allclose(xr.open_zarr(whole)["prediction_mean"].values.ravel()[1:], direct, rtol=1e-5)
    # maps of the mean track the synthetic truth
    truth = _truth(ds.red.values, ds.nir.values)[1:]
    assert np.corrcoef(mean[1:].ravel(), truth.ravel())[0, 1] > 0.7


def test_cli_fit_predict_info_and_errors(cube_store, points_csv, tmp_path):
    path, _ = cube_store
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "fit",
            str(path),
            str(points_csv),
            "--model",
            str(tmp_path / "m"),
            "--target",
            "lfmc",
            "--method",
            "deterministic",
            "--n-steps",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["method"] == "deterministic"
    store_copy = tmp_path / "cube.zarr"
    xr.open_zarr(path).to_zarr(store_copy, zarr_format=3, consolidated=False)
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), str(store_copy), "--name", "lfmc"])
    assert res.exit_code == 0, res.output
    both = xr.open_zarr(store_copy)
    assert {"red", "lfmc_mean", "lfmc_upper"} <= set(both.data_vars)
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), str(store_copy), "--name", "lfmc"])
    assert res.exit_code == 2 and "already has lfmc_mean" in res.output
    res = runner.invoke(app, ["info", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a saved uncertainty model" in res.output
    res = runner.invoke(
        app,
        ["fit", str(path), str(points_csv), "--model", str(tmp_path / "m2"), "--method", "bayes", "--target", "lfmc"],
    )
    assert res.exit_code == 2 and "unknown method 'bayes'" in res.output


@pytest.mark.slow  # the Prefect test server takes most of the time
def test_prefect_flow_trains_an_artefact_only_when_asked_to_replace_one(
    cube_store, points_csv, tmp_path, prefect_harness
):
    from flows.uncertainty import train_uncertainty
    from pipeline.uncertainty.artefact import load_artefact

    path, _ = cube_store
    options = {"target": "lfmc", "method": "deterministic", "n_steps": 3, "hidden": 8, "epochs": 5}
    done = train_uncertainty(path, points_csv, tmp_path / "model", options=options)
    card = load_artefact(done["artefact"]).card
    assert card["inputs"]["n_steps"] == 3 and card["sha256"]["weights.safetensors"]
    with pytest.raises(Exception, match="already"):  # a second run never replaces the artefact silently
        train_uncertainty(path, points_csv, tmp_path / "model", options=options)
    assert load_artefact(done["artefact"]).card["sha256"] == card["sha256"]
