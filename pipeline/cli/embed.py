"""``eocube embed``: add foundation-model embeddings to a cube Zarr store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Foundation-model embeddings of a cube store.")
console = Console(stderr=True)


@app.command("run")
def run(
    store: Path = typer.Option(..., "--store", help="cube Zarr store (written by `eocube cube`)"),
    model: str = typer.Option(
        "presto", "--model", help="presto, galileo-nano, prithvi-eo-2.0-{tiny-tl,100m-tl,300m,300m-tl,600m,600m-tl}"
    ),
    weights: Path | None = typer.Option(None, "--weights", help="weights file or folder (else the caches)"),
    name: str = typer.Option("embeddings", "--name", help="output variable name"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)"),
    chip: int | None = typer.Option(None, "--chip", help="chip size in pixels"),
    overlap: int = typer.Option(0, "--overlap", help="chip overlap in pixels (patch models)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="chips per task (default: fit memory)"),
    patch_size: int = typer.Option(4, "--patch-size", help="Galileo patch size p (1..8)"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the encoder"),
    download: bool = typer.Option(False, "--download", help="download official weights if not found"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing variable"),
    dask_address: str | None = typer.Option(None, "--dask", help="Dask scheduler address (default: a LocalCluster)"),
) -> None:
    """Embed the cube and write variable NAME into the store."""
    from distributed import Client, LocalCluster

    from pipeline.cube.cluster import QUIET_HTTP
    from pipeline.embeddings.engine import write_embeddings
    from pipeline.embeddings.weights import WeightsNotFoundError

    cluster = None
    try:
        cluster = None if dask_address else LocalCluster(processes=False, **QUIET_HTTP)
        with Client(dask_address or cluster):
            out = write_embeddings(
                store,
                model,
                weights,
                name=name,
                overwrite=overwrite,
                device=device,
                chip_size=chip,
                overlap=overlap,
                batch_size=batch_size,
                patch_size=patch_size,
                compile_model=compile_model,
                allow_download=download,
            )
    except (ValueError, FileNotFoundError, FileExistsError, WeightsNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        if cluster is not None:
            cluster.close()
    console.print(
        f"wrote {name} {dict(out.sizes)} ({out.attrs['model']}, sha256 {out.attrs['weights_sha256'][:12]}) to {store}"
    )


@app.command("models")
def models() -> None:
    """List the supported models and where their weights would be looked up."""
    from pipeline.embeddings.registry import SOURCES
    from pipeline.embeddings.weights import WeightsNotFoundError, resolve_weights

    for key, src in SOURCES.items():
        try:
            where = str(resolve_weights(key, src))
        except WeightsNotFoundError:
            where = f"not found (download: {src.download_url()})"
        typer.echo(f"{key:<24} {where}")


@app.command("train-head")
def train_head_cmd(
    store: Path = typer.Option(..., "--store", help="store holding the embeddings (child group or root variable)"),
    points: Path = typer.Option(..., "--points", help="labelled points (.csv or .parquet): lon, lat, target column"),
    out: Path = typer.Option(..., "--out", help="artefact folder to write (weights.safetensors + card.json)"),
    target: str = typer.Option("target", "--target", help="target column of the points"),
    name: str | None = typer.Option(None, "--name", help="name of the predicted quantity (default: --target)"),
    units: str | None = typer.Option(None, "--units", help="units of the target"),
    variable: str = typer.Option("embeddings", "--variable", help="embeddings variable"),
    group: str = typer.Option("embeddings", "--group", help="child group holding it (else the store's root)"),
    folds: int = typer.Option(5, "--folds", help="k of the cross-validation choosing the ridge penalty"),
    coverage: float = typer.Option(0.9, "--coverage", help="nominal coverage of the Gaussian interval"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing artefact at --out"),
) -> None:
    """Train a ridge-regression head on the embeddings at labelled points and write it as an artefact;
    prints the card's key fields as JSON."""
    import json

    from pipeline.cli.common import user_errors

    with user_errors():
        from pipeline.uncertainty.artefact_io import check_output
        from pipeline.uncertainty.cube import store_provenance
        from pipeline.uncertainty.head import open_embeddings, train_head

        check_output(out, overwrite)
        emb = open_embeddings(store, variable, group)
        from_group = group if (store / group / "zarr.json").is_file() else None
        head = train_head(
            emb,
            points,
            target,
            name=name,
            units=units,
            folds=folds,
            coverage=coverage,
            seed=seed,
            provenance={"store": str(store), "group": from_group, **store_provenance(store)},
        )
        path = head.save(out, overwrite=overwrite)
    typer.echo(json.dumps({"artefact": str(path), **head.summary()}, default=str))
