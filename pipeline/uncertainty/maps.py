"""Predict uncertainty maps for every pixel of a store, one spatial block at a time.

Outputs (float32, ``(y, x)``, target units): ``{name}_mean``, ``{name}_sigma_epistemic``,
``{name}_sigma_aleatoric``, ``{name}_sigma``, ``{name}_lower``, ``{name}_upper``. Pixels without
any valid observation in the window are NaN. The block loop reads, predicts and writes one
``block × block`` tile at a time (Zarr region writes), so memory is bounded by the block size
whatever the map size. Attributes record method, α, MC passes, calibration and the training
data's sha256.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from pipeline import __version__
from pipeline.store.paths import check_not_own_input
from pipeline.store.zarr_store import atomic_store
from pipeline.uncertainty.api import Prediction, UncertaintyModel
from pipeline.uncertainty.cube import feature_array, open_store, valid_array, window_indices

FIELDS = Prediction.FIELDS
LONG_NAMES = {
    "mean": "predictive mean",
    "sigma_epistemic": "epistemic standard deviation (MC spread, uncalibrated)",
    "sigma_aleatoric": "aleatoric standard deviation (predicted noise, uncalibrated)",
    "sigma": "total predictive standard deviation (calibrated)",
    "lower": "lower bound of the calibrated prediction interval",
    "upper": "upper bound of the calibrated prediction interval",
}


def map_attrs(model: UncertaintyModel, features: list[str], time_window: list[str]) -> dict:
    """Provenance attributes of the output variables (JSON-able scalars and strings)."""
    d = model.describe()
    return {
        "eocube:uncertainty_method": d["method"],
        "eocube:alpha": json.dumps(d["alpha"]),
        "eocube:mc_samples": int(d["mc_samples"]),
        "eocube:calibration": d["calibration"],
        "eocube:coverage": float(d["coverage"]),
        "eocube:training_sha256": str(d.get("training_sha256", "")),
        "eocube:features": json.dumps(features),
        "eocube:time_window": json.dumps(time_window),
    }


def predict_block(
    model: UncertaintyModel,
    x: np.ndarray,
    ok: np.ndarray,
    *,
    coverage: float | None = None,
    mc_samples: int | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """``[6, ny, nx]`` outputs for one block ``x, ok [T, ny, nx, F]``; NaN where nothing is valid.

    ``coverage``, ``mc_samples`` and ``seed`` as in :meth:`UncertaintyModel.predict`."""
    t, ny, nx, f = x.shape
    xs = np.moveaxis(x, 0, 2).reshape(ny * nx, t, f)
    vs = np.moveaxis(ok, 0, 2).reshape(ny * nx, t, f)
    out = np.full((len(FIELDS), ny * nx), np.nan, dtype=np.float32)
    has_data = vs.any(axis=(1, 2))
    if has_data.any():
        p = model.predict(xs[has_data], vs[has_data], coverage=coverage, mc_samples=mc_samples, seed=seed)
        out[:, has_data] = np.stack([getattr(p, k) for k in FIELDS])
    return out.reshape(len(FIELDS), ny, nx)


def _fill_blocks(
    model: UncertaintyModel,
    feats: xr.DataArray,
    ok: xr.DataArray,
    t_idx: np.ndarray,
    name: str,
    block: int,
    target: Path,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Predict and write every ``block x block`` tile of the maps into the store at ``target``, then consolidate."""
    ny, nx = feats.sizes["y"], feats.sizes["x"]
    blocks = [(ys, xs) for ys in range(0, ny, block) for xs in range(0, nx, block)]
    for i, (y0, x0) in enumerate(blocks):
        sel = {"time": t_idx, "y": slice(y0, y0 + block), "x": slice(x0, x0 + block)}
        res = predict_block(model, feats.isel(sel).values, ok.isel(sel).values)
        part = xr.Dataset({f"{name}_{k}": (("y", "x"), res[j]) for j, k in enumerate(FIELDS)})
        part.to_zarr(
            target,
            region={"y": slice(y0, y0 + res.shape[1]), "x": slice(x0, x0 + res.shape[2])},
            mode="r+",
            consolidated=False,
        )
        if progress:
            progress(i + 1, len(blocks))
    with warnings.catch_warnings():  # consolidated metadata is a zarr-python v3 extension
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(target), zarr_format=3)


def predict_map(
    model: UncertaintyModel,
    store: str | Path,
    out: str | Path | None = None,
    *,
    variables: list[str] | None = None,
    time: str | None = None,
    name: str = "prediction",
    block: int = 256,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the six prediction maps of ``model`` for every pixel of ``store``.

    ``out=None`` adds the variables to ``store`` itself; otherwise a new Zarr v3 store at ``out``
    with the cube's ``x``/``y``/``spatial_ref``, written atomically (an eocube store there is
    replaced only with ``overwrite``, anything else never). ``variables`` are the feature
    variables (default: the model's, from its metadata); ``time`` the window's anchor (default:
    the store's last step). Returns the output path.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    ds = open_store(store)
    variables = variables or model.metadata.get("variables")
    if not variables:
        raise ValueError("no feature variables given and the model does not record any")
    feats = feature_array(ds, list(variables))
    if feats.sizes["feature"] != model.standardizer.x_mean.size:
        raise ValueError(
            f"store gives {feats.sizes['feature']} features but the model expects {model.standardizer.x_mean.size}"
        )
    ok = valid_array(ds, feats)
    anchor = None if time is None else np.datetime64(time, "ns")
    t_idx = (
        window_indices(feats["time"].values, anchor, model.n_steps or feats.sizes["time"])
        if "time" in ds.dims
        else np.array([0])
    )
    window = [str(t) for t in feats["time"].values[t_idx]] if "time" in ds.dims else []
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    attrs = map_attrs(model, list(variables), window)
    keep = {c: ds.coords[c] for c in ("y", "x", "spatial_ref") if c in ds.coords}
    template = xr.Dataset(
        {
            f"{name}_{k}": (
                ("y", "x"),
                da.full((ny, nx), np.nan, dtype=np.float32, chunks=(block, block)),
                {**attrs, "long_name": LONG_NAMES[k], "grid_mapping": "spatial_ref"},
            )
            for k in FIELDS
        },
        coords=keep,
    )
    encoding = {
        v: {"chunks": (min(block, ny), min(block, nx)), "_FillValue": np.float32(np.nan)} for v in template.data_vars
    }
    if out is None:
        target = Path(store)
        clash = [str(v) for v in template.data_vars if v in ds.data_vars]
        if clash:
            raise FileExistsError(f"{target} already has {', '.join(clash)}; choose another name")
        template.drop_vars([c for c in keep if c in ds.variables]).to_zarr(
            target, mode="a", compute=False, zarr_format=3, consolidated=False, encoding=encoding
        )
        _fill_blocks(model, feats, ok, t_idx, name, block, target, progress)
        return target
    target = Path(out)
    check_not_own_input(store, target)
    with atomic_store(target, overwrite) as tmp:
        template.assign_attrs({"eocube:version": __version__}).to_zarr(
            tmp, mode="w-", compute=False, zarr_format=3, consolidated=False, encoding=encoding
        )
        _fill_blocks(model, feats, ok, t_idx, name, block, tmp, progress)
    return target
