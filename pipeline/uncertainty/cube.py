"""Read model inputs from a cube or embeddings Zarr store, at labelled points or for every pixel.

Features are store variables over ``(y, x)``, optionally with ``time`` and/or one extra
dimension (e.g. ``dim`` of an embeddings variable): a ``(time, y, x)`` band gives one feature, a
``(y, x, dim)`` embedding gives ``dim`` static features (repeated over time). The time window of
a sample is the last ``n_steps`` store time steps at or before its anchor time; steps before a
sample's ``start`` and entries that are NaN or not ``valid`` are missing. Stores without a
``time`` dimension give ``T = 1``.

A chain store keeps its derived products in child Zarr groups (``composite``, ``embeddings``);
:func:`open_product` opens one of them (the cube is the root group). Patch embeddings
``(patch_y, patch_x, dim)`` are read on their patch grid, renamed to ``(y, x)``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pandas as pd
import xarray as xr
from pyproj import Transformer

from pipeline.sensors.harmonise import CANONICAL_BANDS
from pipeline.store.open import open_cube

NON_FEATURES = ("valid", "spatial_ref")
PRODUCTS = ("cube", "composite", "embeddings")


def open_store(path: str | Path) -> xr.Dataset:
    """Open a Zarr store lazily (``spatial_ref`` as a coordinate); a clear error if it is missing."""
    with warnings.catch_warnings():  # stores without consolidated metadata open fine, just slower
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        return open_cube(Path(path))


def _looks_like(ds: xr.Dataset, product: str) -> bool:
    """Whether a root group holds ``product`` itself (a composite store, or embeddings added to a store)."""
    if product == "composite":
        return "eocube:composite" in ds.attrs
    return any({"model", "weights_sha256"} <= set(v.attrs) for v in ds.data_vars.values())


def as_pixel_grid(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``patch_y``/``patch_x`` renamed to ``y``/``x`` (patch centres, CRS units) and
    ``spatial_ref`` as a coordinate, so patch embeddings are read like pixels."""
    renames = {p: d for p, d in (("patch_y", "y"), ("patch_x", "x")) if p in ds.dims and d not in ds.dims}
    if renames:
        ds = ds.rename(renames)
    if "spatial_ref" in ds.data_vars:
        ds = ds.set_coords("spatial_ref")
    return ds


def open_product(store: str | Path, product: str = "cube", group: str | None = None) -> xr.Dataset:
    """The ``product`` of ``store`` as a lazy Dataset: the cube is the root group; ``composite`` and
    ``embeddings`` are the child group ``group`` (default: the product's name) or, where there is no
    such group, the root if it holds that product. A group without ``spatial_ref`` takes the root's.
    ``ds.encoding["eocube_group"]`` says which group was opened (``None``: the root)."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; choose one of {', '.join(PRODUCTS)}")
    root = open_store(store)
    if product == "cube" and group is None:
        return _opened(as_pixel_grid(root), None)
    name = group or product
    if (Path(store) / name / "zarr.json").is_file():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
            ds = xr.open_zarr(store, group=name, chunks={}, consolidated=False, decode_coords="all")
        if "spatial_ref" not in ds.variables and "spatial_ref" in root.variables:
            ds = ds.assign_coords(spatial_ref=root["spatial_ref"])
        return _opened(as_pixel_grid(ds), name)
    if group is None and _looks_like(root, product):
        return _opened(as_pixel_grid(root), None)
    raise ValueError(f"store {store} has no {product} product (no group {name!r}, and its root holds no {product})")


def _opened(ds: xr.Dataset, group: str | None) -> xr.Dataset:
    ds.encoding = {**ds.encoding, "eocube_group": group}
    return ds


def store_provenance(store: str | Path, ds: xr.Dataset | None = None) -> dict:
    """The store's ``request``, ``sources`` and ``composite`` records (root/product attributes, parsed), where present."""
    attrs = dict(open_store(store).attrs)
    if ds is not None:
        attrs.update(ds.attrs)
    out = {}
    for key, attr in (
        ("request", "eocube:request"),
        ("sources", "eocube:source_items"),
        ("composite", "eocube:composite"),
    ):
        if attr in attrs:
            try:
                out[key] = json.loads(attrs[attr]) if isinstance(attrs[attr], str) else attrs[attr]
            except json.JSONDecodeError:
                out[key] = attrs[attr]
    return out


def embedding_of(ds: xr.Dataset, variables: list[str]) -> dict | None:
    """``{"model", "weights_sha256"}`` of the embedding among ``variables`` (from its attributes), else ``None``."""
    for name in variables:
        attrs = ds[name].attrs if name in ds.data_vars else {}
        if "model" in attrs or "weights_sha256" in attrs:
            return {"model": str(attrs.get("model", "")), "weights_sha256": str(attrs.get("weights_sha256", ""))}
    return None


def default_features(ds: xr.Dataset) -> list[str]:
    """Float variables over ``(y, x)`` other than ``valid``: the cube's bands or an embedding."""
    names = [
        str(n)
        for n, v in ds.data_vars.items()
        if n not in NON_FEATURES and {"y", "x"} <= set(v.dims) and np.issubdtype(v.dtype, np.floating)
    ]
    if not names:
        raise ValueError("the store has no float variable over (y, x) to use as features")
    # a stable order whatever order the store lists its arrays in: bands by wavelength, then the rest
    rank = {b: i for i, b in enumerate(CANONICAL_BANDS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def feature_array(ds: xr.Dataset, variables: list[str]) -> xr.DataArray:
    """Lazy ``(time, y, x, feature)`` stack of ``variables`` (static ones broadcast along time)."""
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise ValueError(f"store has no variable(s) {', '.join(missing)}; it has {', '.join(map(str, ds.data_vars))}")
    parts = []
    for name in variables:
        var = ds[name]
        extra = [d for d in var.dims if d not in ("time", "y", "x")]
        if len(extra) > 1 or not {"y", "x"} <= set(var.dims):
            raise ValueError(f"variable {name!r} has dims {var.dims}; expected (y, x) plus optional time and one more")
        if extra:
            var = var.rename({extra[0]: "feature"})
            var = var.assign_coords(feature=[f"{name}[{i}]" for i in range(var.sizes["feature"])])
        else:
            var = var.expand_dims(feature=[name], axis=-1)
        parts.append(var.drop_vars([c for c in var.coords if c not in ("time", "y", "x", "feature")]))
    out = xr.concat(parts, dim="feature", coords="minimal", join="exact")
    if "time" not in out.dims:
        out = out.expand_dims(time=1, axis=0)
    return out.transpose("time", "y", "x", "feature")


def valid_array(ds: xr.Dataset, features: xr.DataArray) -> xr.DataArray:
    """Lazy ``(time, y, x, feature)`` validity: finite values and the store's ``valid`` flag (if any)."""
    ok = cast(xr.DataArray, np.isfinite(features))  # a DataArray (__array_ufunc__), which numpy's stubs do not model
    if "valid" in ds.data_vars and "time" in ds["valid"].dims:
        ok = ok & ds["valid"].astype(bool)
    return ok.transpose("time", "y", "x", "feature")


def window_indices(times: np.ndarray, anchor: np.datetime64 | None, n_steps: int) -> np.ndarray:
    """Indices of the last ``n_steps`` entries of ``times`` at or before ``anchor`` (all when ``None``)."""
    n_steps = min(n_steps, times.size)
    end = times.size if anchor is None else int(np.searchsorted(times, anchor, side="right"))
    if end < n_steps:
        raise ValueError(f"only {end} store time steps at or before {anchor}; {n_steps} are needed")
    return np.arange(end - n_steps, end)


@dataclass
class LabelledPoints:
    """Labelled points: ``lon``, ``lat`` (degrees), ``target`` and optional ``time``/``start``/``end``."""

    table: pd.DataFrame
    sha256: str


def read_points(path: str | Path, target: str = "target") -> LabelledPoints:
    """Read labelled points from CSV or (Geo)Parquet.

    Needs columns ``lon``, ``lat`` (or a GeoParquet point ``geometry`` in WGS 84) and ``target``
    (renamed from ``target``); optional ``time`` (or ``date``) or a ``start``/``end`` date range.
    ``sha256`` is the hash of the file's bytes, recorded with models and maps.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"points file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".geoparquet", ".pq"):
        table = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        table = pd.read_csv(path)
    else:
        raise ValueError(f"points file {path} must be .csv or .parquet")
    if {"lon", "lat"} - set(table.columns) and "geometry" in table.columns:
        import shapely

        geoms = shapely.from_wkb(table["geometry"].to_numpy())
        table = table.assign(lon=shapely.get_x(geoms), lat=shapely.get_y(geoms))
    if "date" in table.columns and "time" not in table.columns:
        table = table.rename(columns={"date": "time"})
    missing = {"lon", "lat", target} - set(table.columns)
    if missing:
        raise ValueError(f"points file {path} lacks column(s) {', '.join(sorted(missing))}")
    table = table.rename(columns={target: "target"})
    for col in ("time", "start", "end"):
        if col in table.columns:
            table[col] = pd.to_datetime(table[col]).dt.tz_localize(None).astype("datetime64[ns]")
    if table["target"].isna().any():
        raise ValueError(f"{int(table['target'].isna().sum())} points have no target value")
    return LabelledPoints(table.reset_index(drop=True), hashlib.sha256(path.read_bytes()).hexdigest())


def pixel_indices(ds: xr.Dataset, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixel containing each (lon, lat); errors for points outside the grid."""
    crs = ds.odc.crs if "spatial_ref" in ds.coords else None
    if crs is None:
        raise ValueError("the store has no CRS (spatial_ref); cannot place lon/lat points")
    px, py = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True).transform(lon, lat)
    xs, ys = ds["x"].values, ds["y"].values
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    col = np.floor((px - (xs[0] - dx / 2)) / dx).astype(int)
    row = np.floor((py - (ys[0] - dy / 2)) / dy).astype(int)
    outside = (col < 0) | (col >= xs.size) | (row < 0) | (row >= ys.size)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} point(s) lie outside the store's grid, e.g. lon/lat "
            f"({lon[outside][0]:.5f}, {lat[outside][0]:.5f})"
        )
    return row, col


def sample_points(
    ds: xr.Dataset, points: pd.DataFrame, variables: list[str], n_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X [N, T, F] with NaN where missing, valid [N, T, F], y [N])`` at the points' pixels and windows."""
    feats = feature_array(ds, variables)
    ok = valid_array(ds, feats)
    row, col = pixel_indices(ds, points["lon"].to_numpy(float), points["lat"].to_numpy(float))
    times = feats["time"].values if "time" in ds.dims else np.array([np.datetime64("NaT")])
    anchors = points["end"] if "end" in points else points["time"] if "time" in points else None
    n_steps = min(n_steps, times.size)
    t_idx = np.stack(
        [
            window_indices(times, None if anchors is None or "time" not in ds.dims else np.datetime64(a, "ns"), n_steps)
            for a in (anchors if anchors is not None else [None] * len(points))
        ]
    )
    where = {
        "time": xr.DataArray(t_idx, dims=("sample", "step")),
        "y": xr.DataArray(row, dims="sample"),
        "x": xr.DataArray(col, dims="sample"),
    }
    X = feats.isel(where).transpose("sample", "step", "feature").values.astype(np.float64)
    valid = ok.isel(where).transpose("sample", "step", "feature").values.astype(bool)
    if "start" in points and "time" in ds.dims:
        starts = points["start"].to_numpy().astype("datetime64[ns]")
        valid &= (times[t_idx] >= starts[:, None])[..., None]
    X[~valid] = np.nan
    return X, valid, points["target"].to_numpy(float)
