"""``eocube cube ...``: temporal composites of a written cube store."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import user_errors
from pipeline.cube.compositing import METHODS, as_method

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Cube assembly tools: temporal composites.")


@app.command()
def composite(
    store: Path = typer.Argument(..., help="input cube store (.zarr) with a 'valid' variable"),
    out: Path = typer.Argument(..., help="output composite store (.zarr)"),
    freq: str = typer.Option("1MS", help="start-anchored pandas frequency: 10D, 1MS, QS-DEC, YS"),
    method: str = typer.Option("median", help=f"one of {', '.join(METHODS)}"),
    overwrite: bool = typer.Option(False, help="replace an existing eocube store at OUT"),
    dask_address: str | None = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
) -> None:
    """Composite every band of STORE into regular time bins and write OUT (with gap statistics)."""
    from pipeline.chain.composite import composite_store
    from pipeline.cube.cluster import dask_client

    with user_errors(), dask_client(dask_address):
        written = composite_store(store, out, freq, as_method(method), overwrite)
    typer.echo(f"composite written to {written}")
