"""``eocube cube ...``: temporal composites of a written cube store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cube.compositing import METHODS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Cube assembly tools: temporal composites.")


@app.command()
def composite(store: Path = typer.Argument(..., help="input cube store (.zarr) with a 'valid' variable"),
              out: Path = typer.Argument(..., help="output composite store (.zarr)"),
              freq: str = typer.Option("1MS", help="start-anchored pandas frequency: 10D, 1MS, QS-DEC, YS"),
              method: str = typer.Option("median", help=f"one of {', '.join(METHODS)}"),
              dask_address: Optional[str] = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS",
                                                         help="existing Dask scheduler")) -> None:
    """Composite every band of STORE into regular time bins and write OUT (with gap statistics)."""
    from flows.cube import composite_store

    try:
        written = composite_store(store, out, freq=freq, method=method, dask_address=dask_address)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"composite written to {written}")
