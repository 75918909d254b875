"""A ridge-regression head on foundation-model embeddings, trained from labelled points, saved as an artefact.

``train_head(embeddings, points, target)`` takes the embedding vector of the pixel/patch nearest
each labelled point (``embeddings``: ``(y, x, dim)`` or ``(patch_y, patch_x, dim)`` with attributes
``model`` and ``weights_sha256``, as :func:`~pipeline.embeddings.engine.embed_cube` writes them),
standardises the vectors (training mean and standard deviation per dimension) and fits
``y = b + z · W`` in closed form with an L2 penalty ``λ`` (per sample: ``mean(r²) + λ ||W||²``)
chosen by k-fold cross-validation. The cross-validated residual σ (target units) makes a Gaussian
interval ``mean ± z_{(1+c)/2} σ``.

The artefact folder holds ``weights.safetensors`` (``W [dim]``, ``b [1]``, ``mean [dim]``,
``scale [dim]``) and ``card.json``: ``kind`` (``eocube-embedding-head``), ``format_version``,
``created``, ``eocube_version``, ``method`` (``ridge``), ``target`` (name, units), ``inputs``
(product, variable, embedding model and weights_sha256, dim, spatial dims), ``ridge`` (λ, grid,
folds), ``sigma``, ``coverage``, ``metrics.cv`` (R², RMSE, MAE, interval coverage, n), ``training``
(points file and sha256, store, group, point counts, the store's provenance) and ``sha256``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS, Transformer

from pipeline import __version__
from pipeline.uncertainty.artefact_io import ArtefactError, read_card, read_weights, utc_now, write_artefact
from pipeline.uncertainty.calibration import gaussian_quantile

__all__ = ["HeadArtefact", "load_head", "open_embeddings", "ridge_cv", "train_head"]

KIND = "eocube-embedding-head"
FORMAT_VERSION = 1
#: Penalties tried by cross-validation (per sample, on standardised embeddings).
LAMBDAS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 2, 17))


def spatial_dims(emb: xr.DataArray, allow_time: bool = False) -> tuple[str, str]:
    """``("y", "x")`` or ``("patch_y", "patch_x")``; the embedding must also have ``dim`` (and, with
    ``allow_time``, may have ``time``: per-time-step embeddings)."""
    for dims in (("y", "x"), ("patch_y", "patch_x")):
        if set(emb.dims) - {"time"} == {*dims, "dim"} and (allow_time or "time" not in emb.dims):
            return dims
    extra = " (plus an optional time)" if allow_time else ""
    raise ArtefactError(f"embeddings must have dims (y, x, dim) or (patch_y, patch_x, dim){extra}, got {emb.dims}")


@dataclass
class HeadArtefact:
    """A trained head: ``weights [dim]`` (target units per standardised unit), ``bias`` (target units),
    the standardiser ``mean``/``scale [dim]`` (embedding units) and its ``card``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def target(self) -> str:
        return str(self.card["target"]["name"])

    @property
    def sigma(self) -> float:
        """Cross-validated residual standard deviation, target units."""
        return float(self.card["sigma"])

    @property
    def sha256(self) -> str:
        """sha256 of ``weights.safetensors`` (empty until saved)."""
        return str((self.card.get("sha256") or {}).get("weights.safetensors", ""))

    def summary(self) -> dict[str, Any]:
        """Provenance for logs and outputs: kind, target, embedding model, λ, σ, CV metrics, training data, sha256."""
        c = self.card
        return {
            "kind": c["kind"],
            "format_version": c["format_version"],
            "created": c["created"],
            "eocube_version": c["eocube_version"],
            "method": c["method"],
            "target": c["target"],
            "embedding": c["inputs"]["embedding"],
            "dim": c["inputs"]["dim"],
            "lambda": c["ridge"]["lambda"],
            "sigma": c["sigma"],
            "coverage": c["coverage"],
            "metrics": c["metrics"]["cv"],
            "training": {k: c["training"].get(k) for k in ("points", "points_sha256", "store", "group", "n_used")},
            "sha256": c.get("sha256"),
        }

    def check_inputs(self, emb: xr.DataArray) -> None:
        """One-line :class:`ArtefactError` unless ``emb`` comes from the same embedding model, weights and dim."""
        spatial_dims(emb, allow_time=True)
        want = self.card["inputs"]["embedding"]
        got = {"model": emb.attrs.get("model"), "weights_sha256": emb.attrs.get("weights_sha256")}
        label = f"head {self.target!r}"
        if not got["model"] or not got["weights_sha256"]:
            raise ArtefactError(
                f"embeddings carry no model/weights_sha256 attributes; {label} expects "
                f"{want['model']} (weights sha256 {want['weights_sha256'][:12]})"
            )
        if got != want:
            raise ArtefactError(
                f"embeddings were made with {got['model']} (weights sha256 {got['weights_sha256'][:12]}) "
                f"but {label} expects {want['model']} (weights sha256 {want['weights_sha256'][:12]})"
            )
        if emb.sizes["dim"] != self.weights.size:
            raise ArtefactError(f"embeddings have dim {emb.sizes['dim']} but {label} expects {self.weights.size}")

    def predict(self, emb_tile: xr.DataArray, coverage: float | None = None) -> xr.Dataset:
        """``{target}_mean``, ``_sigma``, ``_lower``, ``_upper`` (float32, target units) on the tile's spatial
        dims (and ``time`` first, for per-time-step embeddings); NaN where a cell's embedding is not finite.
        ``coverage``: the interval's (default: the card's)."""
        self.check_inputs(emb_tile)
        sy, sx = spatial_dims(emb_tile, allow_time=True)
        out_dims = (*(("time",) if "time" in emb_tile.dims else ()), sy, sx)
        values = np.asarray(emb_tile.transpose(*out_dims, "dim").values, dtype=np.float64)
        ok = np.isfinite(values).all(axis=-1)
        mean = np.full(ok.shape, np.nan)
        mean[ok] = ((values[ok] - self.mean) / self.scale) @ self.weights + self.bias
        cov = float(coverage if coverage is not None else self.card["coverage"])
        half = gaussian_quantile(cov) * self.sigma
        sigma = np.where(ok, self.sigma, np.nan)
        attrs = {
            "eocube:head": KIND,
            "eocube:embedding_model": self.card["inputs"]["embedding"]["model"],
            "eocube:coverage": cov,
            "eocube:head_sha256": self.sha256,
            "eocube:training_sha256": self.card["training"].get("points_sha256") or "",
            **({"units": self.card["target"]["units"]} if self.card["target"].get("units") else {}),
        }
        coords = {c: emb_tile.coords[c] for c in (*out_dims, "spatial_ref") if c in emb_tile.coords}
        out = {"mean": mean, "sigma": sigma, "lower": mean - half, "upper": mean + half}
        return xr.Dataset(
            {f"{self.target}_{k}": (out_dims, v.astype(np.float32), attrs) for k, v in out.items()}, coords=coords
        )

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``weights.safetensors`` + ``card.json`` to ``folder`` (an existing artefact only with ``overwrite``)."""
        tensors = {"W": self.weights, "b": np.array([self.bias]), "mean": self.mean, "scale": self.scale}
        self.path = write_artefact(folder, tensors, self.card, overwrite)
        return self.path


def load_head(path: str | Path) -> HeadArtefact:
    """Read a head artefact; the weights are checked against the card's sha256 (one-line :class:`ArtefactError`)."""
    card = read_card(path, KIND, (FORMAT_VERSION,))
    t = read_weights(path, card)
    missing = {"W", "b", "mean", "scale"} - set(t)
    if missing:
        raise ArtefactError(f"{Path(path) / 'weights.safetensors'} lacks tensor(s) {', '.join(sorted(missing))}")
    return HeadArtefact(
        t["W"].astype(np.float64),
        float(t["b"][0]),
        t["mean"].astype(np.float64),
        t["scale"].astype(np.float64),
        card,
        Path(path),
    )


def _crs_of(emb: xr.DataArray) -> CRS:
    ref = emb.coords.get("spatial_ref")
    wkt = None if ref is None else ref.attrs.get("crs_wkt") or ref.attrs.get("spatial_ref")
    wkt = wkt or emb.attrs.get("crs")
    if not wkt:
        raise ValueError("the embeddings carry no CRS (no spatial_ref coordinate); cannot place lon/lat points")
    return CRS.from_user_input(wkt)


def nearest_cells(emb: xr.DataArray, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices along the two spatial dims of the cell (pixel or patch) nearest each (lon, lat) in degrees;
    a point more than half a cell outside the grid is an error."""
    sy, sx = spatial_dims(emb)
    px, py = Transformer.from_crs("EPSG:4326", _crs_of(emb), always_xy=True).transform(lon, lat)
    out = []
    for dim, p in ((sy, np.asarray(py)), (sx, np.asarray(px))):
        c = emb[dim].values.astype(np.float64)
        if c.size < 2:
            raise ValueError(f"embeddings need at least 2 cells along {dim}")
        idx = np.abs(c[None, :] - p[:, None]).argmin(axis=1)
        outside = np.abs(c[idx] - p) > abs(c[1] - c[0]) / 2 * (1 + 1e-9)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{int(outside.sum())} point(s) lie outside the embeddings' grid, e.g. lon/lat "
                f"({lon[i]:.5f}, {lat[i]:.5f})"
            )
        out.append(idx)
    return out[0], out[1]


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def _ridge_path(Z: np.ndarray, yc: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """``W [L, D]`` minimising ``mean((yc - Z W)²) + λ ||W||²`` for each ``λ`` (SVD of ``Z``)."""
    u, s, vt = np.linalg.svd(Z, full_matrices=False)
    uty = u.T @ yc
    shrink = s[None, :] / (s[None, :] ** 2 + Z.shape[0] * lambdas[:, None])
    return (shrink * uty[None, :]) @ vt


def ridge_cv(
    X: np.ndarray, y: np.ndarray, lambdas: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[float, np.ndarray, np.ndarray]:
    """k-fold CV of standardised ridge regression over ``lambdas``: ``(best λ, out-of-fold predictions at
    it [N], CV mean squared error per λ [L])``. Each fold standardises with its own training rows."""
    n = y.size
    order = np.random.default_rng(seed).permutation(n)
    oof = np.empty((lambdas.size, n))
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        mean, scale = _standardise(X[train])
        W = _ridge_path((X[train] - mean) / scale, y[train] - y[train].mean(), lambdas)
        oof[:, part] = W @ ((X[part] - mean) / scale).T + y[train].mean()
    mse = ((oof - y[None, :]) ** 2).mean(axis=1)
    best = int(np.argmin(mse))
    return float(lambdas[best]), oof[best], mse


def _points_table(points: pd.DataFrame | str | Path, target: str) -> tuple[pd.DataFrame, str, str | None]:
    if isinstance(points, pd.DataFrame):
        missing = {"lon", "lat", target} - set(points.columns)
        if missing:
            raise ValueError(f"points lack column(s) {', '.join(sorted(missing))}")
        table = points.rename(columns={target: "target"}).reset_index(drop=True)
        return table, hashlib.sha256(points.to_csv(index=False).encode()).hexdigest(), None
    from pipeline.uncertainty.cube import read_points

    labelled = read_points(points, target)
    return labelled.table, labelled.sha256, str(points)


def train_head(
    embeddings: xr.DataArray,
    points: pd.DataFrame | str | Path,
    target: str = "target",
    *,
    name: str | None = None,
    units: str | None = None,
    lambdas: tuple[float, ...] = LAMBDAS,
    folds: int = 5,
    coverage: float = 0.9,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
) -> HeadArtefact:
    """Fit a ridge head on the embedding vectors at labelled points (see the module docstring).

    ``points``: a CSV/Parquet path or DataFrame with ``lon``, ``lat`` (degrees) and the ``target``
    column; ``name``/``units``: the predicted quantity (default: ``target``); ``folds``: k of the CV
    that picks ``λ`` from ``lambdas`` and gives the metrics and the residual σ; ``provenance``: extra
    ``training`` fields for the card (store, group, the store's request/sources). Points whose
    embedding is not finite are left out (counted in the card).
    """
    spatial_dims(embeddings)
    emb_id = {"model": embeddings.attrs.get("model"), "weights_sha256": embeddings.attrs.get("weights_sha256")}
    if not emb_id["model"] or not emb_id["weights_sha256"]:
        raise ValueError(
            "the embeddings carry no model/weights_sha256 attributes (as `eocube embed` writes them); "
            "a head must record which model made its inputs"
        )
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    table, sha, path = _points_table(points, target)
    iy, ix = nearest_cells(embeddings, table["lon"].to_numpy(float), table["lat"].to_numpy(float))
    sy, sx = spatial_dims(embeddings)
    X = np.asarray(
        embeddings.isel({sy: xr.DataArray(iy, dims="p"), sx: xr.DataArray(ix, dims="p")}).transpose("p", "dim").values,
        dtype=np.float64,
    )
    y = table["target"].to_numpy(float)
    keep = np.isfinite(X).all(axis=1) & np.isfinite(y)
    X, y = X[keep], y[keep]
    if y.size < 2 * folds:
        raise ValueError(
            f"{y.size} labelled points with a finite embedding; {folds}-fold CV needs at least {2 * folds}"
        )
    grid = np.asarray(lambdas, dtype=np.float64)
    lam, oof, mse = ridge_cv(X, y, grid, folds, seed)
    resid = y - oof
    sigma = float(np.sqrt(np.mean(resid**2)))
    half = gaussian_quantile(coverage) * sigma
    mean, scale = _standardise(X)
    W = _ridge_path((X - mean) / scale, y - y.mean(), np.array([lam]))[0]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    card = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "created": utc_now(),
        "eocube_version": __version__,
        "method": "ridge",
        "target": {"name": name or target, "units": units},
        "inputs": {
            "product": "embeddings",
            "variable": embeddings.name,
            "embedding": emb_id,
            "dim": int(X.shape[1]),
            "spatial_dims": [sy, sx],
        },
        "ridge": {
            "lambda": lam,
            "lambdas": grid.tolist(),
            "cv_mse": mse.tolist(),
            "folds": folds,
            "seed": seed,
            "standardised": True,
        },
        "sigma": sigma,
        "coverage": coverage,
        "metrics": {
            "cv": {
                "n": int(y.size),
                "r2": 1 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else None,
                "rmse": sigma,
                "mae": float(np.mean(np.abs(resid))),
                "picp": float(np.mean(np.abs(resid) <= half)),
            }
        },
        "training": {
            "points": path,
            "points_sha256": sha,
            "n_points": int(keep.size),
            "n_used": int(y.size),
            "n_without_embedding": int((~keep).sum()),
            **(provenance or {}),
        },
    }
    return HeadArtefact(W, float(y.mean()), mean, scale, card)


def open_embeddings(store: str | Path, variable: str = "embeddings", group: str | None = "embeddings") -> xr.DataArray:
    """The embeddings ``variable`` of a store: from child group ``group`` where the store has it, else from
    the root (where ``eocube embed run`` writes it), with the store's ``spatial_ref`` as a coordinate."""
    import warnings

    store = Path(store)
    if not store.exists():
        raise FileNotFoundError(f"store {store} does not exist")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        root = xr.open_zarr(store, chunks={}, decode_coords="all")
        ds = root
        if group and (store / group / "zarr.json").is_file():
            ds = xr.open_zarr(store, group=group, chunks={}, consolidated=False, decode_coords="all")
    if variable not in ds.variables:
        where = f"group {group!r} or the root" if group else "the root"
        raise ValueError(f"store {store} has no variable {variable!r} in {where}")
    emb = ds[variable]
    for src in (ds, root):
        if "spatial_ref" not in emb.coords and "spatial_ref" in src.variables:
            emb = emb.assign_coords(spatial_ref=src["spatial_ref"])
    return emb
