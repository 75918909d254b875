"""Trained models are artefacts: weights.safetensors + card.json, verified on load, checked against the cube.

Real components throughout (training, safetensors, Zarr stores written with xarray, the CLI), on a
small synthetic chain store (cube root + ``composite`` and ``embeddings`` child groups) and on the
real fuel-moisture set where ``shared/`` is present.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import xarray as xr
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from safetensors.numpy import load_file
from typer.testing import CliRunner

from pipeline.cli import app as eocube
from pipeline.uncertainty import fit
from pipeline.uncertainty.api import UncertaintyModel
from pipeline.uncertainty.artefact import (
    ArtefactError,
    UncertaintyArtefact,
    artefact_summary,
    check_inputs,
    load_artefact,
    predict_tile,
)
from pipeline.uncertainty.card import load_model, save_model
from pipeline.uncertainty.cube import open_product
from pipeline.uncertainty.head import HeadArtefact, load_head, open_embeddings, train_head
from pipeline.uncertainty.stage import train_artefact

torch.set_num_threads(1)
CRS = "EPSG:32633"
CRS_WKT = ProjCRS.from_user_input(CRS).to_wkt()
NY, NX, NT, DIM = 14, 12, 6, 8
FAST = dict(hidden=16, epochs=30, patience=8, mc_samples=12)
EMB_ID = {"model": "presto", "weights_sha256": "ab" * 32}
W_TRUE = np.linspace(-2.0, 3.0, DIM)

CARD_FIELDS = {
    "kind",
    "format_version",
    "created",
    "eocube_version",
    "method",
    "target",
    "inputs",
    "network",
    "train",
    "options",
    "standardizer",
    "calibration",
    "alpha",
    "mc_samples",
    "training",
    "metrics",
    "sha256",
}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


@pytest.fixture(scope="module")
def chain_store(tmp_path_factory):
    """Cube (root: red/nir/valid over time), a monthly ``composite`` group and an ``embeddings`` group
    (``(y, x, dim)`` with model attributes, no spatial_ref of its own); pixel (0, 0) never valid."""
    rng = np.random.default_rng(0)
    x = 500_000 + 10 * np.arange(NX) + 5.0
    y = 5_000_000 - 10 * np.arange(NY) - 5.0
    time = pd.date_range("2024-01-01", periods=NT, freq="16D").values.astype("datetime64[ns]")
    red = rng.uniform(0.02, 0.2, (NT, NY, NX)).astype(np.float32)
    nir = (red + rng.uniform(0.0, 0.4, (NT, NY, NX))).astype(np.float32)
    valid = rng.random((NT, NY, NX)) > 0.15
    valid[:, 0, 0] = False
    red[~valid], nir[~valid] = np.nan, np.nan
    cube = xr.Dataset(
        {
            "red": (("time", "y", "x"), red),
            "nir": (("time", "y", "x"), nir),
            "valid": (("time", "y", "x"), valid.astype(np.uint8)),
        },
        coords={"time": time, "y": y, "x": x},
    ).rio.write_crs(CRS)
    cube.attrs["eocube:request"] = json.dumps({"collections": ["sentinel-2-l2a"], "start": "2024-01-01"})
    path = tmp_path_factory.mktemp("chain") / "chain.zarr"
    cube.to_zarr(path, zarr_format=3, consolidated=False)
    monthly = cube[["red", "nir"]].resample(time="1MS").mean()
    monthly.attrs = {"eocube:composite": json.dumps({"freq": "1MS", "method": "mean"})}
    monthly.to_zarr(path, group="composite", zarr_format=3, consolidated=False)
    emb = rng.normal(size=(NY, NX, DIM)).astype(np.float32)
    emb[0, 0] = np.nan
    xr.Dataset({"embeddings": (("y", "x", "dim"), emb, EMB_ID)}, coords={"y": y, "x": x}).to_zarr(
        path, group="embeddings", zarr_format=3, consolidated=False
    )
    return path, cube, emb


@pytest.fixture(scope="module")
def points_csv(chain_store, tmp_path_factory):
    """Every pixel but row 0: ``lfmc`` from the cube's bands, ``cover`` linear in the embedding plus noise."""
    _, cube, emb = chain_store
    rows, cols = np.meshgrid(np.arange(1, NY), np.arange(NX), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
        cube.x.values[cols], cube.y.values[rows]
    )
    lfmc = 50 * np.nanmean((cube.nir - cube.red).values[:, rows, cols], axis=0) + 20
    cover = emb[rows, cols] @ W_TRUE + 40 + np.random.default_rng(1).normal(0, 0.1, rows.size)
    path = tmp_path_factory.mktemp("pts") / "points.csv"
    pd.DataFrame(
        {"lon": lon, "lat": lat, "lfmc": lfmc, "cover": cover, "time": "2024-03-31", "site": (rows // 2).astype(str)}
    ).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(chain_store, points_csv, tmp_path_factory):
    """An MC-ConcTD model on the cube, saved as an artefact."""
    store, _, _ = chain_store
    out = tmp_path_factory.mktemp("art") / "lfmc"
    model, path = train_artefact(
        store, points_csv, out, target="lfmc", units="%", n_steps=4, group_column="site", method="mc-conctd", **FAST
    )
    return model, path


def cube_tile(chain_store) -> xr.Dataset:
    return open_product(chain_store[0], "cube")


def test_round_trip_gives_identical_predictions(trained, chain_store):
    model, path = trained
    loaded = load_artefact(path)
    X = np.random.default_rng(2).normal(0.2, 0.1, (40, 4, 2))
    a, b = model.predict(X, seed=3), loaded.model.predict(X, seed=3)
    for k in ("mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert loaded.model.describe() == model.describe() and loaded.model.metrics == model.metrics
    tile = cube_tile(chain_store)
    xr.testing.assert_identical(
        predict_tile(UncertaintyArtefact.from_model(model), tile, seed=5)["lfmc_mean"].drop_attrs(),
        predict_tile(loaded, tile, seed=5)["lfmc_mean"].drop_attrs(),
    )


def test_card_has_the_fields_and_the_weights_sha256(trained, points_csv, chain_store):
    model, path = trained
    card = json.loads((path / "card.json").read_text())
    assert CARD_FIELDS <= set(card) and sorted(p.name for p in path.iterdir()) == ["card.json", "weights.safetensors"]
    assert (card["kind"], card["format_version"], card["method"]) == ("eocube-uncertainty", 3, "mc-conctd")
    assert card["target"] == {"name": "lfmc", "units": "%"}
    assert card["inputs"] == {
        "product": "cube",
        "variables": ["red", "nir"],
        "features": ["red", "nir"],
        "n_features": 2,
        "n_steps": 4,
        "embedding": None,
    }
    assert (
        card["sha256"]["weights.safetensors"] == hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    )
    assert card["training"]["points_sha256"] == hashlib.sha256(points_csv.read_bytes()).hexdigest()
    assert card["training"]["store"] == str(chain_store[0]) and card["training"]["n_points"] == (NY - 1) * NX
    assert card["training"]["request"]["collections"] == ["sentinel-2-l2a"]
    alpha = card["alpha"]
    assert len(alpha) == 1 and 0 < alpha[0] < 1 and alpha == model.learned_alpha
    cal = card["calibration"]
    assert cal["kind"] == "conformal" and len(cal["scores"]) == cal["n_calibration"] == model.metadata["n_calibration"]
    assert cal["scores"] == sorted(cal["scores"])
    assert set(card["standardizer"]) >= {"x_mean", "x_std", "y_mean", "y_std"}
    assert {"r2", "rmse", "picp", "n"} <= set(card["metrics"]["validation"])
    assert card["mc_samples"] == 12 and card["members"] == 1
    tensors = load_file(str(path / "weights.safetensors"))
    assert all(k.startswith("0.") for k in tensors) and "0.input_dropout.logit_alpha" in tensors
    assert load_artefact(path).sha256 == card["sha256"]["weights.safetensors"]
    summary = artefact_summary(card)
    assert summary["sha256"] == card["sha256"] and summary["alpha"] == alpha and summary["target"]["name"] == "lfmc"
    assert summary["calibration"]["any_coverage"] and "split-conformal" in summary["calibration"]["description"]


def test_changed_or_incomplete_artefacts_are_refused_in_one_line(trained, tmp_path):
    _, path = trained
    bad = tmp_path / "tampered"
    shutil.copytree(path, bad)
    raw = bytearray((bad / "weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtefactError, match="weights.safetensors has sha256") as err:
        load_artefact(bad)
    assert str(bad / "weights.safetensors") in one_line(err.value)
    with pytest.raises(ArtefactError, match="weights.safetensors has sha256"):
        load_model(bad)[0]
    (bad / "weights.safetensors").unlink()
    with pytest.raises(ArtefactError, match="weights.safetensors not found"):
        load_artefact(bad)
    card = json.loads((path / "card.json").read_text())
    for change, message in (
        ({"kind": "eocube-embedding-head"}, "not 'eocube-uncertainty'"),
        ({"format_version": 4}, "format_version 4"),
    ):
        shutil.rmtree(bad)
        shutil.copytree(path, bad)
        (bad / "card.json").write_text(json.dumps({**card, **change}))
        with pytest.raises(ArtefactError, match=message) as err:
            load_artefact(bad)
        one_line(err.value)
    with pytest.raises(ArtefactError, match="not a saved uncertainty model"):
        load_artefact(tmp_path / "nothing-here")


def test_save_refuses_to_overwrite_unless_asked(trained, tmp_path):
    model, path = trained
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(model, path)
    target = save_model(model, tmp_path / "copy")
    before = (target / "card.json").read_text()
    save_model(model, target, overwrite=True)
    assert json.loads((target / "card.json").read_text())["sha256"] == json.loads(before)["sha256"]
    assert not list(tmp_path.glob(".copy.*"))  # no temporary folder left behind
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an eocube artefact"):
        save_model(model, other, overwrite=True)
    assert (other / "readme.txt").read_text() == "mine"


def save_format2(model: UncertaintyModel, folder: Path) -> Path:
    """The FORMAT_VERSION 2 layout written by eocube before artefacts: model.pt + model.json."""
    folder.mkdir()
    torch.save([n.state_dict() for n in model.networks], folder / "model.pt")
    calibration = {k: v for k, v in model.calibration.to_dict().items() if k != "scores"}
    doc = {
        "format_version": 2,
        "network": model.network_config.to_dict(),
        "train": model.train_config.to_dict(),
        "options": asdict(model.options),
        "standardizer": model.standardizer.to_dict(),
        "calibration": calibration,
        "train_info": [i.to_dict() for i in model.train_info],
        "metadata": model.metadata,
    }
    (folder / "model.json").write_text(json.dumps(doc, indent=2))
    return folder


def test_format2_folders_still_load(trained, chain_store, tmp_path):
    model, _ = trained
    old = save_format2(model, tmp_path / "old")
    loaded = load_model(old)[0]
    X = np.random.default_rng(4).normal(0.2, 0.1, (30, 4, 2))
    np.testing.assert_array_equal(model.predict(X, seed=1).upper, loaded.predict(X, seed=1).upper)
    art = load_artefact(old)
    assert art.card["format_version"] == 2 and "model.pt" in art.card["sha256"]
    assert art.card["inputs"]["variables"] == ["red", "nir"]
    maps = predict_tile(art, cube_tile(chain_store), seed=0)  # its own coverage works
    assert np.isfinite(maps["lfmc_upper"].values[1:]).all()
    with pytest.raises(ArtefactError, match="keeps no conformal calibration scores") as err:
        predict_tile(art, cube_tile(chain_store), coverage=0.8)
    one_line(err.value)
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(model, old)  # a format-2 folder is an artefact too


def test_check_inputs_refuses_mismatched_cubes_in_one_line(trained, chain_store):
    _, path = trained
    card = load_artefact(path).card
    cube = cube_tile(chain_store)
    check_inputs(card, cube, "cube")
    cases = [
        (cube.drop_vars("nir"), {}, "lacks variable(s) nir"),
        (cube.isel(time=slice(0, 2)), {}, "has 2 time step(s) but artefact 'lfmc' (mc-conctd) needs 4"),
        (cube, {"anchor_time": "2024-01-20"}, "at or before 2024-01-20"),
        (cube.isel(time=0), {}, "no time dimension"),
        (cube, {"product": "composite"}, "trained on the 'cube' product, not 'composite'"),
    ]
    for ds, kw, message in cases:
        with pytest.raises(ArtefactError, match=re.escape(message)) as err:
            check_inputs(card, ds, kw.get("product"), anchor_time=kw.get("anchor_time"))
        one_line(err.value)


def test_predict_tile_is_seeded_nan_without_data_and_serves_any_coverage(trained, chain_store):
    _, path = trained
    art = load_artefact(path)
    tile = cube_tile(chain_store)
    state = torch.get_rng_state()
    a, b, c = (predict_tile(art, tile, seed=s) for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert set(a.data_vars) == {
        f"lfmc_{k}" for k in ("mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper")
    }
    assert all(v.dtype == np.float32 and v.dims == ("y", "x") for v in a.data_vars.values())
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["lfmc_mean"].values[1:], c["lfmc_mean"].values[1:])  # MC: another seed, other masks
    assert all(np.isnan(a[v].values[0, 0]) for v in a.data_vars)
    assert all(np.isfinite(a[v].values[1:]).all() for v in a.data_vars)
    assert a["lfmc_mean"].attrs["eocube:coverage"] == 0.9 and a["lfmc_mean"].attrs["units"] == "%"
    assert a.rio.crs.to_epsg() == 32633
    widths = {}
    for cov in (0.5, 0.8, 0.9, 0.95):
        m = predict_tile(art, tile, coverage=cov, seed=0)
        np.testing.assert_array_equal(m["lfmc_mean"].values, a["lfmc_mean"].values)
        np.testing.assert_array_equal(m["lfmc_sigma"].values, a["lfmc_sigma"].values)
        widths[cov] = (m["lfmc_upper"] - m["lfmc_lower"]).values[1:]
        assert m["lfmc_mean"].attrs["eocube:coverage"] == cov
    np.testing.assert_array_equal(widths[0.9], (a["lfmc_upper"] - a["lfmc_lower"]).values[1:])
    for lo, hi in ((0.5, 0.8), (0.8, 0.9), (0.9, 0.95)):
        assert np.all(widths[lo] <= widths[hi]) and widths[lo].mean() < widths[hi].mean()
    with ThreadPoolExecutor(4) as pool:  # one artefact shared by threads (a Dask worker): same maps per seed
        runs = list(pool.map(lambda s: predict_tile(art, tile, seed=s)["lfmc_mean"].values, [0, 1, 0, 1, 0, 1]))
    for i, run in enumerate(runs):
        np.testing.assert_array_equal(run, (a if i % 2 == 0 else c)["lfmc_mean"].values)
    early = predict_tile(art, tile, anchor_time=str(tile.time.values[4]), seed=0)
    assert not np.array_equal(early["lfmc_mean"].values[1:], a["lfmc_mean"].values[1:])
    fewer = predict_tile(art, tile, mc_samples=3, seed=0)
    assert fewer["lfmc_mean"].attrs["eocube:mc_samples"] == 3
    with pytest.raises(ArtefactError, match="too few for a 99% conformal interval"):
        predict_tile(art, tile, coverage=0.99)


def test_embeddings_artefact_records_and_checks_the_embedding_model(chain_store, points_csv, tmp_path):
    store, _, _ = chain_store
    _, path = train_artefact(
        store,
        points_csv,
        tmp_path / "cover",
        target="cover",
        product="embeddings",
        n_steps=6,
        method="mc-td",
        alpha=0.2,
        **FAST,
    )
    art = load_artefact(path)
    inputs = art.card["inputs"]
    assert inputs["product"] == "embeddings" and inputs["embedding"] == EMB_ID and inputs["n_steps"] == 1
    assert inputs["n_features"] == DIM and inputs["features"][0] == "embeddings[0]"
    assert art.card["training"]["group"] == "embeddings"
    emb = open_product(store, "embeddings")
    maps = predict_tile(art, emb, seed=0)
    assert np.isnan(maps["cover_mean"].values[0, 0]) and np.isfinite(maps["cover_mean"].values[1:]).all()
    other = emb.assign(embeddings=emb["embeddings"].assign_attrs(weights_sha256="cd" * 32))
    with pytest.raises(
        ArtefactError, match="made with presto .weights sha256 cdcdcdcdcdcd. but artefact 'cover'"
    ) as err:
        check_inputs(art.card, other)
    one_line(err.value)
    bare = emb.assign(embeddings=emb["embeddings"].drop_attrs())
    with pytest.raises(ArtefactError, match="carry no embedding model attributes"):
        predict_tile(art, bare)
    with pytest.raises(ArtefactError, match="give 4 features but"):
        check_inputs(art.card, emb.isel(dim=slice(0, 4)))
    with pytest.raises(ArtefactError, match="trained on the 'embeddings' product, not 'cube'"):
        check_inputs(art.card, emb, "cube")


def synthetic_embeddings(
    dims: tuple[str, str] = ("y", "x"), n: int = 20, dim: int = 16, seed: int = 0, attrs: dict | None = None
) -> tuple[xr.DataArray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, n, dim)).astype(np.float32)
    values[0, 0] = np.nan
    coords = {dims[0]: 5_000_000 - 40 * np.arange(n) - 20.0, dims[1]: 500_000 + 40 * np.arange(n) + 20.0}
    emb = xr.DataArray(
        values,
        dims=(*dims, "dim"),
        coords=coords,
        name="embeddings",
        attrs=attrs or {"model": "galileo-nano", "weights_sha256": "12" * 32},
    )
    emb = emb.assign_coords(spatial_ref=xr.DataArray(0, attrs={"crs_wkt": CRS_WKT}))
    return emb, values


def head_points(emb: xr.DataArray, values: np.ndarray, w: np.ndarray, noise: float = 0.2) -> pd.DataFrame:
    sy, sx = emb.dims[:2]
    rows, cols = np.meshgrid(np.arange(emb.sizes[sy]), np.arange(emb.sizes[sx]), indexing="ij")
    rows, cols = rows.ravel()[::2], cols.ravel()[::2]
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
        emb[sx].values[cols], emb[sy].values[rows]
    )
    y = values[rows, cols] @ w + 12.0 + np.random.default_rng(3).normal(0, noise, rows.size)
    return pd.DataFrame({"lon": lon, "lat": lat, "biomass": y})


@pytest.mark.parametrize("dims", [("y", "x"), ("patch_y", "patch_x")])
def test_head_recovers_a_linear_target_and_round_trips(dims, tmp_path):
    emb, values = synthetic_embeddings(dims)
    w = np.random.default_rng(7).normal(size=16)
    table = head_points(emb, values, w)
    head = train_head(emb, table, "biomass", units="t/ha")
    cv = head.card["metrics"]["cv"]
    assert cv["r2"] > 0.98 and cv["rmse"] < 0.4 and head.card["training"]["n_without_embedding"] == 1
    assert head.card["inputs"]["embedding"] == {"model": "galileo-nano", "weights_sha256": "12" * 32}
    assert head.card["inputs"]["spatial_dims"] == list(dims) and head.card["inputs"]["dim"] == 16
    maps = head.predict(emb)
    assert set(maps.data_vars) == {"biomass_mean", "biomass_sigma", "biomass_lower", "biomass_upper"}
    assert maps["biomass_mean"].dims == dims and np.isnan(maps["biomass_mean"].values[0, 0])
    truth = values @ w + 12.0
    np.testing.assert_allclose(maps["biomass_mean"].values[1:], truth[1:], atol=1.0)
    inside = (maps["biomass_lower"].values <= truth) & (truth <= maps["biomass_upper"].values)
    assert 0.8 < inside[1:].mean() <= 1.0
    path = head.save(tmp_path / "head")
    card = json.loads((path / "card.json").read_text())
    assert card["kind"] == "eocube-embedding-head" and card["target"] == {"name": "biomass", "units": "t/ha"}
    assert (
        card["sha256"]["weights.safetensors"] == hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    )
    back = load_head(path)
    xr.testing.assert_equal(back.predict(emb), maps)
    xr.testing.assert_identical(back.predict(emb), head.predict(emb))  # the saved head records its sha256
    assert back.predict(emb)["biomass_mean"].attrs["eocube:head_sha256"] == card["sha256"]["weights.safetensors"]
    wider = back.predict(emb, coverage=0.99)
    assert np.all(
        (wider["biomass_upper"] - wider["biomass_lower"]).values[1:]
        > (maps["biomass_upper"] - maps["biomass_lower"]).values[1:]
    )
    for attrs, message in (
        ({"model": "presto", "weights_sha256": "12" * 32}, "made with presto"),
        ({"model": "galileo-nano", "weights_sha256": "34" * 32}, "weights sha256 343434343434"),
        ({}, "carry no model/weights_sha256"),
    ):
        with pytest.raises(ArtefactError, match=message) as err:
            back.predict(emb.assign_attrs(attrs) if attrs else emb.drop_attrs())
        one_line(err.value)
    steps = back.predict(xr.concat([emb, emb], dim="time").assign_coords(time=[0, 1]))  # per-time-step embeddings
    assert steps["biomass_mean"].dims == ("time", *dims)
    np.testing.assert_array_equal(steps["biomass_mean"].values[1], maps["biomass_mean"].values)
    with pytest.raises(ArtefactError, match="have dim 8 but"):
        back.check_inputs(emb.isel(dim=slice(0, 8)))
    with pytest.raises(FileExistsError, match="already exists"):
        back.save(path)
    raw = bytearray((path / "weights.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (path / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtefactError, match="weights.safetensors has sha256"):
        load_head(path)


def test_head_refuses_embeddings_without_a_model_and_points_off_the_grid():
    emb, values = synthetic_embeddings()
    table = head_points(emb, values, np.ones(16))
    with pytest.raises(ValueError, match="no model/weights_sha256 attributes"):
        train_head(emb.drop_attrs(), table, "biomass")
    with pytest.raises(ValueError, match="outside the embeddings' grid"):
        train_head(emb, table.assign(lon=table.lon + 1.0), "biomass")
    assert isinstance(train_head(emb, table.iloc[:20], "biomass", folds=3), HeadArtefact)


def test_cli_uncertainty_train_info_predict(chain_store, points_csv, tmp_path):
    store, _, _ = chain_store
    runner = CliRunner()
    fast = ["--hidden", "8", "--epochs", "8", "--patience", "4", "--mc-samples", "5"]
    out = tmp_path / "vegetation"
    args = [
        "uncertainty",
        "train",
        "--store",
        str(store),
        "--points",
        str(points_csv),
        "--out",
        str(out),
        "--target",
        "lfmc",
        "--name",
        "vegetation_cover",
        "--units",
        "%",
        "--n-steps",
        "2",
        "--product",
        "composite",
        "--group-column",
        "site",
        "--seed",
        "1",
        *fast,
    ]
    res = runner.invoke(eocube, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["artefact"] == str(out) and summary["method"] == "mc-conctd"
    assert summary["target"] == {"name": "vegetation_cover", "units": "%"}
    assert summary["inputs"]["product"] == "composite" and summary["inputs"]["n_steps"] == 2
    assert summary["training"]["group"] == "composite" and len(summary["sha256"]["weights.safetensors"]) == 64
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["composite"] == {"freq": "1MS", "method": "mean"} and card["options"]["seed"] == 1
    res = runner.invoke(eocube, args)  # an artefact is never replaced silently
    assert res.exit_code == 2 and "already exists" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(eocube, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(eocube, ["uncertainty", "info", str(out)])
    assert res.exit_code == 0 and json.loads(res.stdout)["artefact"]["kind"] == "eocube-uncertainty"
    res = runner.invoke(
        eocube,
        [
            "uncertainty",
            "train",
            "--store",
            str(store),
            "--points",
            str(points_csv),
            "--out",
            str(tmp_path / "x"),
            "--target",
            "lfmc",
            "--product",
            "video",
        ],
    )
    assert res.exit_code == 2 and "unknown product 'video'" in res.output
    # predict checks the store against the artefact before any work: the cube root has 6 steps, this one 1
    cube1 = tmp_path / "one-step.zarr"
    xr.open_zarr(store, decode_coords="all", consolidated=False).isel(time=[0]).to_zarr(
        cube1, zarr_format=3, consolidated=False
    )
    res = runner.invoke(eocube, ["uncertainty", "predict", "--model", str(out), str(cube1)])
    assert res.exit_code == 2 and "1 time step(s) but artefact 'vegetation_cover'" in res.output
    assert "vegetation_cover_mean" not in xr.open_zarr(cube1, consolidated=False).data_vars


def test_cli_embed_train_head(chain_store, points_csv, tmp_path):
    store, _, _ = chain_store
    runner = CliRunner()
    args = [
        "embed",
        "train-head",
        "--store",
        str(store),
        "--points",
        str(points_csv),
        "--out",
        str(tmp_path / "head"),
        "--target",
        "cover",
        "--units",
        "%",
    ]
    res = runner.invoke(eocube, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["kind"] == "eocube-embedding-head" and summary["embedding"] == EMB_ID and summary["dim"] == DIM
    assert summary["metrics"]["r2"] > 0.98 and summary["training"]["n_used"] == (NY - 1) * NX
    assert summary["sha256"]["weights.safetensors"] == load_head(tmp_path / "head").sha256
    head = load_head(tmp_path / "head")
    assert head.card["training"]["group"] == "embeddings" and head.card["training"]["request"]["start"] == "2024-01-01"
    emb = open_embeddings(store)
    assert np.isfinite(head.predict(emb)["cover_mean"].values[1:]).all()
    res = runner.invoke(eocube, args)
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(eocube, [*args[:-4], "--variable", "nope", "--out", str(tmp_path / "h2")])
    assert res.exit_code == 2 and "no variable 'nope'" in res.output


def test_real_fuel_moisture_model_round_trips(shared_dir, tmp_path):
    from pipeline.uncertainty.datasets import load_fuel_moisture

    d = load_fuel_moisture(shared_dir / "data" / "fuel-moisture")
    train = np.flatnonzero(~d.is_test)[:700]
    test = np.flatnonzero(d.is_test)[:200]
    model = fit(
        d.X[train],
        d.y[train],
        method="mc-conctd",
        groups=d.site[train],
        feature_groups=list(d.feature_groups),
        hidden=16,
        epochs=15,
        patience=5,
        mc_samples=10,
        seed=0,
    )
    model.metadata.update(variables=list(d.features), target={"name": "lfmc", "units": "%"})
    path = save_model(model, tmp_path / "lfmc")
    loaded = load_artefact(path)
    a, b = model.predict(d.X[test], seed=0), loaded.model.predict(d.X[test], seed=0)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert len(loaded.card["alpha"]) == len(set(d.feature_groups))  # one learned rate per sensor group
    assert loaded.card["target"]["units"] == "%" and loaded.card["inputs"]["n_steps"] == 3
    assert loaded.card["metrics"]["validation"]["n"] == model.metadata["n_validation"]
    narrow = loaded.model.predict(d.X[test], seed=0, coverage=0.5)
    assert np.all(narrow.upper - narrow.lower <= b.upper - b.lower)
