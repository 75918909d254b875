"""``eocube uncertainty fit|predict|info``: train from labelled points, write uncertainty maps."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Temporal-dropout uncertainty regression: fit from labelled points, predict maps.")
console = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", highlight=False)
    return typer.Exit(2)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("fit")
def fit_cmd(store: Path = typer.Argument(..., help="cube or embeddings Zarr store"),
            points: Path = typer.Argument(..., help="labelled points (.csv or .parquet): lon, lat, target, time|start/end"),
            model_dir: Path = typer.Option(..., "--model", help="output folder for model.pt + model.json"),
            method: str = typer.Option("mc-conctd", help="mc-conctd | mc-td | mc-dropout | deterministic | ensemble"),
            variables: Optional[str] = typer.Option(None, help="comma-separated feature variables (default: all bands)"),
            n_steps: int = typer.Option(6, help="time steps per sample window"),
            target: str = typer.Option("target", help="target column"),
            group_column: Optional[str] = typer.Option(None, help="column whose groups are held out together (e.g. site)"),
            encoder: str = typer.Option("gru", help="gru | transformer"),
            alpha: float = typer.Option(0.1, help="temporal dropout rate (mc-td) or its initial value (mc-conctd)"),
            alpha_objective: str = typer.Option("heldout", help="what the mc-conctd rate follows: heldout | elbo"),
            regularizer_weight: float = typer.Option(1.0, help="multiplier of the Concrete-Dropout penalty"),
            calibration: str = typer.Option("conformal", help="conformal | variance | none"),
            coverage: float = typer.Option(0.9, help="nominal interval coverage"),
            seed: int = typer.Option(0)) -> None:
    """Fit a model on labelled points sampled from a store and save it."""
    from pipeline.uncertainty.stage import fit_from_points

    try:
        model = fit_from_points(store, points, variables=_csv(variables), n_steps=n_steps, target=target,
                                group_column=group_column, method=method, encoder=encoder, alpha=alpha,
                                alpha_objective=alpha_objective, regularizer_weight=regularizer_weight,
                                calibration=calibration, coverage=coverage, seed=seed)
        model.save(model_dir)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"model": str(model_dir), **model.describe()}, default=str))


@app.command("predict")
def predict_cmd(model_dir: Path = typer.Option(..., "--model", help="folder written by `fit`"),
                store: Path = typer.Argument(..., help="cube or embeddings Zarr store"),
                out: Optional[Path] = typer.Option(None, help="output Zarr store (default: add to STORE)"),
                name: str = typer.Option("prediction", help="prefix of the output variables"),
                time: Optional[str] = typer.Option(None, help="anchor date of the window (default: last step)"),
                block: int = typer.Option(256, help="pixels per block side (bounds memory)"),
                overwrite: bool = typer.Option(False, help="replace an existing eocube store at --out")) -> None:
    """Predict mean, σ (epistemic, aleatoric, total) and interval maps for every pixel."""
    from pipeline.uncertainty.api import UncertaintyModel
    from pipeline.uncertainty.maps import predict_map

    try:
        model = UncertaintyModel.load(model_dir)
        path = predict_map(model, store, out, time=time, name=name, block=block, overwrite=overwrite,
                           progress=lambda d, t: console.print(f"block {d}/{t}", end="\r"))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"store": str(path), "variables": [f"{name}_{k}" for k in
                                                             ("mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper")]}))


@app.command("info")
def info_cmd(model_dir: Path = typer.Argument(..., help="folder written by `fit`")) -> None:
    """Print a saved model's method, α, calibration and provenance as JSON."""
    from pipeline.uncertainty.api import UncertaintyModel

    try:
        model = UncertaintyModel.load(model_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(model.describe(), default=str, indent=2))
