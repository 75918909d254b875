"""The inference engine on a small synthetic cube Zarr store with a real Dask LocalCluster,
checked against calling the encoders directly on inputs built here by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import xarray as xr
from distributed import Client, LocalCluster
from pyproj import Transformer

from pipeline.embeddings import embed_cube, load_encoder, write_embeddings

pytestmark = pytest.mark.shared

BANDS = ["blue", "green", "red", "rededge1", "rededge2", "nir", "nir08", "swir16", "swir22"]  # no rededge3
TIMES = pd.to_datetime(["2021-03-05", "2021-04-10", "2021-06-20"]).values.astype("datetime64[ns]")
CRS = "EPSG:32633"


def make_cube(h: int, w: int, seed: int = 0) -> xr.Dataset:
    """A cube following the cube convention: reflectance, NaN where masked, `valid`, sensor, CRS."""
    rng = np.random.default_rng(seed)
    t = len(TIMES)
    x = 500_000 + 10.0 * np.arange(w) + 5
    y = 4_500_000 - 10.0 * np.arange(h) - 5
    valid = rng.uniform(size=(t, h, w)) > 0.15
    valid[:, :4, :4] = False  # a corner that is never observed
    valid[1, :, w // 2 :] = False  # a cloudy half at t=1
    data = {
        b: (("time", "y", "x"), np.where(valid, rng.uniform(0.01, 0.45, (t, h, w)), np.nan).astype("float32"))
        for b in BANDS
    }
    ds = xr.Dataset(data, coords={"time": TIMES, "y": y, "x": x})
    ds["valid"] = (("time", "y", "x"), valid.astype("uint8"))
    ds = ds.assign_coords(sensor=("time", np.array(["sentinel-2"] * t, dtype=object)))
    return ds.rio.write_crs(CRS)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cube") / "cube.zarr"
    make_cube(12, 20).chunk({"time": 1, "y": 6, "x": 10}).to_zarr(path, zarr_format=3, consolidated=True)
    return path


def latlon(ds: xr.Dataset, i: int, j: int) -> tuple[float, float]:
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(float(ds.x[j]), float(ds.y[i]))
    return lat, lon


def presto_direct(model, ds: xr.Dataset, i: int, j: int) -> np.ndarray:
    """Presto inputs for one pixel written out by hand from the README's contract."""
    order = {
        "blue": 2,
        "green": 3,
        "red": 4,
        "rededge1": 5,
        "rededge2": 6,
        "rededge3": 7,
        "nir": 8,
        "nir08": 9,
        "swir16": 10,
        "swir22": 11,
    }
    t = ds.sizes["time"]
    x = np.zeros((1, t, 17), np.float32)
    mask = np.ones((1, t, 17), np.float32)  # S1, ERA5, SRTM and absent bands stay masked
    for band, k in order.items():
        if band in ds:
            v = ds[band].values[:, i, j]
            x[0, :, k] = np.nan_to_num(v)
            mask[0, :, k] = np.isnan(v)
    b8, b4 = x[0, :, 8], x[0, :, 4]
    x[0, :, 16] = np.where(b8 + b4 > 0, (b8 - b4) / (b8 + b4), 0)
    mask[0, :, 16] = np.maximum(mask[0, :, 8], mask[0, :, 4])
    months = torch.tensor([[pd.Timestamp(v).month - 1 for v in ds.time.values]])
    with torch.no_grad():
        return model(
            torch.from_numpy(x),
            torch.full((1, t), 9),
            torch.tensor([latlon(ds, i, j)], dtype=torch.float32),
            torch.from_numpy(mask),
            months,
        )[0].numpy()


def test_presto_engine_writes_store_and_matches_direct(client, store, shared_dir):
    weights = shared_dir / "models/presto/default_model.pt"
    out = write_embeddings(store, "presto", weights, device="cpu", chip_size=8, batch_size=2)
    ds = xr.open_zarr(store)
    assert out.dims == ("y", "x", "dim") and out.shape == (12, 20, 128)
    assert out.attrs["model"] == "presto" and out.attrs["weights_sha256"].startswith("559c9d76")
    assert "mean" in out.attrs["pooling"]
    assert set(BANDS) <= set(ds.data_vars) and "embeddings" in ds  # cube untouched, variable added
    emb = out.values
    never = ~ds["valid"].values.astype(bool).any(axis=0)
    assert never[:4, :4].all() and never.sum() > 16
    np.testing.assert_array_equal(np.isnan(emb).all(axis=-1), never)  # never observed -> NaN
    assert np.isfinite(emb[~never]).all()
    model, _ = load_encoder("presto", weights, "cpu")
    cube = ds.load()
    for i, j in [(4, 4), (5, 17), (11, 19), (0, 10)]:
        assert not never[i, j]
        np.testing.assert_allclose(emb[i, j], presto_direct(model, cube, i, j), atol=2e-5)
    with pytest.raises(FileExistsError, match="embeddings"):
        write_embeddings(store, "presto", weights, device="cpu")


def test_prithvi_engine_matches_direct(client, store, shared_dir):
    folder = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec"
    weights = folder / "prithvi_tiny_tl_mae.safetensors"
    ds = xr.open_zarr(store).load()
    sub = ds.isel(y=slice(0, 8), x=slice(0, 16))
    emb = embed_cube(sub, "prithvi-eo-2.0-tiny-tl", weights, device="cpu", chip_size=16).compute()
    assert emb.dims == ("patch_y", "patch_x", "dim") and emb.shape == (1, 2, 64)
    np.testing.assert_allclose(emb.patch_x.values, sub.x.values[:16].reshape(2, 8).mean(1))
    model, _ = load_encoder("prithvi-eo-2.0-tiny-tl", weights, "cpu")
    # By hand: a 16x16 chip (rows 8..15 padded as missing), HLS DN normalisation, masked -> mean (0).
    mean = np.array([1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0])[:, None, None, None]
    std = np.array([2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0])[:, None, None, None]
    raw = np.full((6, 3, 16, 16), np.nan)
    raw[:, :, :8] = np.stack([sub[b].values for b in ["blue", "green", "red", "nir08", "swir16", "swir22"]])
    x = torch.from_numpy(np.nan_to_num((raw * 1e4 - mean) / std).astype(np.float32))[None]
    ts = pd.DatetimeIndex(ds.time.values)
    tc = torch.tensor([[[t.year, t.dayofyear] for t in ts]], dtype=torch.float32)
    ys = 4_500_000 - 10.0 * np.arange(16) - 5
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(*np.meshgrid(sub.x.values, ys))
    lc = torch.tensor([[lat.mean(), lon.mean()]], dtype=torch.float32)
    with torch.no_grad():
        tokens = model(x, tc, lc)[0, 1:].reshape(3, 2, 2, 64).mean(0)
    np.testing.assert_allclose(emb.values[0], tokens[0].numpy(), atol=1e-5)


def test_prithvi_overlap_tiling_covers_grid(client, store, shared_dir):
    weights = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec/prithvi_tiny_tl_mae.safetensors"
    emb = embed_cube(store, "prithvi-eo-2.0-tiny-tl", weights, device="cpu", chip_size=16, overlap=8).compute()
    assert emb.shape == (2, 3, 64)  # ceil(12/8) x ceil(20/8) patches
    assert np.isnan(emb.values[0, 0]).all() is np.False_  # the 8x8 patch has observed pixels outside the corner
    assert np.isfinite(emb.values).all()
    assert emb.attrs["overlap_pixels"] == 8 and emb.attrs["embedding_kind"] == "patch"


def test_galileo_engine_patch_grid_and_masking(client, store, shared_dir):
    weights = shared_dir / "models/galileo-nano/encoder.pt"
    emb = embed_cube(store, "galileo", weights, device="cpu", chip_size=8, patch_size=4).compute()
    assert emb.dims == ("patch_y", "patch_x", "dim") and emb.shape == (3, 5, 128)
    assert np.isnan(emb.values[0, 0]).all()  # the never-observed corner patch
    assert np.isfinite(emb.values).any()
    assert emb.attrs["model"] == "galileo-nano" and emb.attrs["cell_size_pixels"] == 4


def test_engine_errors_name_the_problem(tmp_path, shared_dir):
    weights = shared_dir / "models/presto/default_model.pt"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embed_cube(tmp_path / "missing.zarr", "presto", weights)
    cube = make_cube(4, 4).drop_vars(BANDS)
    with pytest.raises(ValueError, match="no band variables"):
        embed_cube(cube, "presto", weights)
    no_nir = make_cube(8, 8).drop_vars(["nir08", "nir", "swir22"])
    prithvi = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec/prithvi_tiny_tl_mae.safetensors"
    with pytest.raises(ValueError, match="lacks"):
        embed_cube(no_nir, "prithvi-eo-2.0-tiny-tl", prithvi, device="cpu", chip_size=8).compute(scheduler="sync")


def test_cli_run_writes_variable_and_reports_errors(tmp_path, shared_dir):
    from typer.testing import CliRunner

    from pipeline.cli.embed import app

    path = tmp_path / "cube.zarr"
    make_cube(8, 8).to_zarr(path, zarr_format=3, consolidated=True)
    weights = shared_dir / "models/presto/default_model.pt"
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--store",
            str(path),
            "--model",
            "presto",
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--name",
            "presto_emb",
        ],
    )
    assert res.exit_code == 0, res.output
    assert xr.open_zarr(path)["presto_emb"].shape == (8, 8, 128)
    bad = CliRunner().invoke(
        app, ["run", "--store", str(path), "--model", "presto", "--weights", str(tmp_path / "x.pt")]
    )
    assert bad.exit_code == 2 and "does not exist" in bad.output
