"""``eocube uncertainty train|fit|predict|info``: train an artefact from labelled points, write uncertainty maps.

``train`` writes a versioned artefact folder (``weights.safetensors`` + ``card.json``, see
:mod:`pipeline.uncertainty.card`); ``fit`` is the older spelling (positional STORE POINTS, ``--model``).
``predict`` checks the store against the artefact's card before any work and never retrains.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Temporal-dropout uncertainty regression: fit from labelled points, predict maps.",
)
console = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(
        f"[bold red]error:[/] {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", highlight=False
    )
    return typer.Exit(2)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _given(**options: object) -> dict:
    """The options the user set (``None`` means: the library's default)."""
    return {k: v for k, v in options.items() if v is not None}


@app.command("train")
def train_cmd(
    store: Path = typer.Option(..., "--store", help="Zarr store (a chain store's products are child groups)"),
    points: Path = typer.Option(
        ..., "--points", help="labelled points (.csv or .parquet): lon, lat, target, time|start/end"
    ),
    out: Path = typer.Option(..., "--out", help="artefact folder to write (weights.safetensors + card.json)"),
    target: str = typer.Option("target", "--target", help="target column of the points"),
    name: str | None = typer.Option(None, "--name", help="name of the predicted quantity (default: --target)"),
    units: str | None = typer.Option(None, "--units", help="units of the target, e.g. %"),
    variables: str | None = typer.Option(
        None, "--variables", help="comma-separated input variables (default: all float (y, x) variables)"
    ),
    n_steps: int = typer.Option(6, "--n-steps", help="time steps per sample window"),
    method: str = typer.Option(
        "mc-conctd", "--method", help="mc-conctd | mc-td | mc-dropout | deterministic | ensemble"
    ),
    product: str = typer.Option("cube", "--product", help="cube (root group) | composite | embeddings"),
    group: str | None = typer.Option(None, "--group", help="child group of the product (default: its name)"),
    group_column: str | None = typer.Option(
        None, "--group-column", help="column whose groups are held out together (e.g. site)"
    ),
    calibration: str = typer.Option("conformal", "--calibration", help="conformal | variance | none"),
    coverage: float = typer.Option(0.9, "--coverage", help="nominal interval coverage"),
    mc_samples: int | None = typer.Option(None, "--mc-samples", help="MC passes at prediction (default 50)"),
    hidden: int | None = typer.Option(None, "--hidden", help="hidden width (default 64)"),
    epochs: int | None = typer.Option(None, "--epochs", help="maximum epochs (default 300)"),
    patience: int | None = typer.Option(None, "--patience", help="early-stopping patience (default 25)"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing artefact at --out"),
) -> None:
    """Train on labelled points sampled from a store and write a versioned artefact; prints its summary as JSON."""
    from pipeline.cli.common import user_errors

    with user_errors():
        from pipeline.uncertainty.artefact import artefact_summary, load_artefact
        from pipeline.uncertainty.stage import train_artefact

        _, path = train_artefact(
            store,
            points,
            out,
            overwrite=overwrite,
            variables=_csv(variables),
            n_steps=n_steps,
            target=target,
            name=name,
            units=units,
            method=method,
            product=product,
            group=group,
            group_column=group_column,
            calibration=calibration,
            coverage=coverage,
            seed=seed,
            **_given(mc_samples=mc_samples, hidden=hidden, epochs=epochs, patience=patience),
        )
        summary = artefact_summary(load_artefact(path).card)
    typer.echo(json.dumps({"artefact": str(path), **summary}, default=str))


@app.command("fit")
def fit_cmd(
    store: Path = typer.Argument(..., help="cube or embeddings Zarr store"),
    points: Path = typer.Argument(..., help="labelled points (.csv or .parquet): lon, lat, target, time|start/end"),
    model_dir: Path = typer.Option(..., "--model", help="output artefact folder (weights.safetensors + card.json)"),
    method: str = typer.Option("mc-conctd", help="mc-conctd | mc-td | mc-dropout | deterministic | ensemble"),
    variables: str | None = typer.Option(None, help="comma-separated feature variables (default: all bands)"),
    n_steps: int = typer.Option(6, help="time steps per sample window"),
    target: str = typer.Option("target", help="target column"),
    group_column: str | None = typer.Option(None, help="column whose groups are held out together (e.g. site)"),
    encoder: str = typer.Option("gru", help="gru | transformer"),
    alpha: float = typer.Option(0.1, help="temporal dropout rate (mc-td) or its initial value (mc-conctd)"),
    alpha_objective: str = typer.Option("heldout", help="what the mc-conctd rate follows: heldout | elbo"),
    regularizer_weight: float = typer.Option(1.0, help="multiplier of the Concrete-Dropout penalty"),
    calibration: str = typer.Option("conformal", help="conformal | variance | none"),
    coverage: float = typer.Option(0.9, help="nominal interval coverage"),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, help="replace an existing artefact at --model"),
) -> None:
    """Fit a model on labelled points sampled from a store and save it (as `train` does)."""
    from pipeline.uncertainty.stage import train_artefact

    try:
        model, _ = train_artefact(
            store,
            points,
            model_dir,
            overwrite=overwrite,
            variables=_csv(variables),
            n_steps=n_steps,
            target=target,
            group_column=group_column,
            method=method,
            encoder=encoder,
            alpha=alpha,
            alpha_objective=alpha_objective,
            regularizer_weight=regularizer_weight,
            calibration=calibration,
            coverage=coverage,
            seed=seed,
        )
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({"model": str(model_dir), **model.describe()}, default=str))


@app.command("predict")
def predict_cmd(
    model_dir: Path = typer.Option(..., "--model", help="folder written by `fit`"),
    store: Path = typer.Argument(..., help="cube or embeddings Zarr store"),
    out: Path | None = typer.Option(None, help="output Zarr store (default: add to STORE)"),
    name: str = typer.Option("prediction", help="prefix of the output variables"),
    time: str | None = typer.Option(None, help="anchor date of the window (default: last step)"),
    block: int = typer.Option(256, help="pixels per block side (bounds memory)"),
    overwrite: bool = typer.Option(False, help="replace an existing eocube store at --out"),
) -> None:
    """Predict mean, σ (epistemic, aleatoric, total) and interval maps for every pixel (inputs checked first)."""
    from pipeline.uncertainty.artefact import check_inputs, load_artefact
    from pipeline.uncertainty.cube import open_store
    from pipeline.uncertainty.maps import predict_map

    try:
        artefact = load_artefact(model_dir)
        model = artefact.model
        if model.metadata.get("variables"):
            check_inputs(artefact.card, open_store(store), anchor_time=time)
        path = predict_map(
            model,
            store,
            out,
            time=time,
            name=name,
            block=block,
            overwrite=overwrite,
            progress=lambda d, t: console.print(f"block {d}/{t}", end="\r"),
        )
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise _fail(exc) from None
    typer.echo(
        json.dumps(
            {
                "store": str(path),
                "variables": [
                    f"{name}_{k}" for k in ("mean", "sigma_epistemic", "sigma_aleatoric", "sigma", "lower", "upper")
                ],
            }
        )
    )


@app.command("info")
def info_cmd(model_dir: Path = typer.Argument(..., help="folder written by `fit`")) -> None:
    """Print a saved model's method, α, calibration and provenance as JSON (with its artefact summary)."""
    from pipeline.uncertainty.artefact import artefact_summary, load_artefact

    try:
        artefact = load_artefact(model_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    typer.echo(
        json.dumps({**artefact.model.describe(), "artefact": artefact_summary(artefact.card)}, default=str, indent=2)
    )
