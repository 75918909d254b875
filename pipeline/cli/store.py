"""``eocube status`` / ``backfill`` / ``update`` / ``stac``: operate analysis-ready stores."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import print_failed_items, progress_display, read_request_file, user_errors

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Analysis-ready stores: backfill, update, status, STAC."
)


def _shards(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    try:
        t, y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--shards {text!r} is not three comma-separated integers (time,y,x)") from None
    return {"time": t, "y": y, "x": x}


@app.command()
def status(
    store: Path = typer.Argument(..., help="store path (.zarr or Icechunk repository)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """List committed slices, sizes, provenance and failures of a store."""
    from pipeline.store.status import store_status

    with user_errors():
        st = store_status(store)
    if as_json:
        Console().print_json(json.dumps(st.to_dict(), default=str))
        return
    out = Console()
    state = f"{st.committed_fraction:.0%} committed" if st.layout == "slices" else "written in one piece"
    out.print(
        f"[bold]{st.path}[/] ({st.engine}): "
        + " x ".join(f"{k}={v}" for k, v in st.shape.items())
        + f", {st.bytes_on_disk / 1e6:.1f} MB on disk, {state}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"time {' .. '.join(st.time_range) or '-'}; sources: "
        + (", ".join(f"{k} {v} items" for k, v in st.sources.items()) or "-"),
        highlight=False,
        soft_wrap=True,
    )
    if st.layout == "slices":
        table = Table("slice", "time range", "MB", "items", "committed", title=f"{len(st.committed)} committed slices")
        for r in st.committed:
            table.add_row(
                r["slice"],
                " .. ".join(r["time_range"]),
                f"{r['bytes'] / 1e6:.2f}",
                str(sum(len(v) for v in r.get("sources", {}).values())),
                r["committed"],
            )
        out.print(table)
    for name, product in st.products.items():
        missing = product["not_computed"]
        out.print(
            f"product {name}: "
            + " x ".join(f"{k}={v}" for k, v in product["shape"].items())
            + f", {product['units_computed']} units made"
            + (f", {len(missing)} not computed" if missing else ""),
            highlight=False,
            soft_wrap=True,
        )
        for unit, why in missing.items():
            out.print(f"  {unit}: {why}", highlight=False, soft_wrap=True)
    print_failed_items(st.failed_items, out)
    if st.failures:
        fails = Table("slice", "error", "message", "at", title=f"{len(st.failures)} failed slices")
        for f in st.failures:
            fails.add_row(f["slice"], f["error"], f["message"][:120], f["at"])
        out.print(fails)
    for run in st.runs[-5:]:
        out.print(
            f"run {run['kind']} {run['start']}..{run['end']}: {run['written']} slices written, finished {run['finished']}"
        )


@app.command()
def backfill(
    request_file: Path = typer.Argument(..., help="request YAML/JSON (fields of CubeRequest)"),
    engine: str = typer.Option("zarr", help="zarr (manifest) or icechunk"),
    tile_px: int = typer.Option(1024, help="tile size, pixels (a multiple of the shard/chunk size)"),
    time_step: int = typer.Option(4, help="time steps per slice"),
    shards: str | None = typer.Option(None, help="shard shape time,y,x (default: unsharded)"),
    wait: float = typer.Option(0.0, help="seconds to wait for another writer's lock"),
    overwrite: bool = typer.Option(
        False,
        help="start over: replace an existing eocube store at the output (never anything else) instead of resuming it",
    ),
    archive: Path | None = typer.Option(None, envvar="EOCUBE_DEMO_ARCHIVE", help="demo archive folder"),
    dask_address: str | None = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
) -> None:
    """Backfill a request's store slice by slice (resumable; committed slices are skipped)."""
    from pipeline.chain import backfill_request
    from pipeline.chain.preflight import preflight
    from pipeline.chain.slices import BackfillSpec
    from pipeline.model import CubeRequest

    with user_errors():
        fields = read_request_file(request_file)
        request = CubeRequest.model_validate({**fields, **({"overwrite": True} if overwrite else {})})
        spec = BackfillSpec(
            engine=engine, tile_px=tile_px, time_step=time_step, shards=_shards(shards), lock_timeout_s=wait
        )
        preflight(request, resume=True)  # before the progress display: a bad request is one line
        with progress_display() as progress:
            report = backfill_request(request, spec, archive, dask_address, progress)
    Console().print(
        f"{report.store}: {len(report.written)} of {report.planned} pending slices written",
        highlight=False,
        soft_wrap=True,
    )
    print_failed_items(report.failed_items)


@app.command()
def update(
    store: Path = typer.Argument(..., help="existing store"),
    until: str | None = typer.Option(None, help="YYYY-MM-DD (default today)"),
    wait: float = typer.Option(60.0, help="seconds to wait for another writer's lock"),
    archive: Path | None = typer.Option(None, envvar="EOCUBE_DEMO_ARCHIVE", help="demo archive folder"),
    dask_address: str | None = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
) -> None:
    """Add the time steps of new items: after the store's last one, or late ones for dates it lacks."""
    from pipeline.chain import update_store
    from pipeline.chain.slices import BackfillSpec

    with user_errors():
        if until is not None:
            try:
                day = dt.date.fromisoformat(until)
            except ValueError:
                raise ValueError(f"--until {until!r} is not a date (YYYY-MM-DD)") from None
        with progress_display() as progress:
            report = update_store(
                store, day if until else None, BackfillSpec(lock_timeout_s=wait), archive, dask_address, progress
            )
    Console().print(
        f"{report.store}: {report.appended_times} time steps appended, "
        f"{report.inserted_times} inserted (items published late), {len(report.written)} slices written; "
        f"{report.late_items_for_held_dates} items published late for dates already held (their slices written again)",
        highlight=False,
        soft_wrap=True,
    )
    print_failed_items(report.failed_items)


@app.command()
def stac(store: Path = typer.Argument(..., help="existing store")) -> None:
    """(Re)write and validate the STAC Item and Collection beside a store."""
    from pipeline.store.engines import open_engine
    from pipeline.store.stac import validate_stac, write_stac

    with user_errors():
        item = write_stac(open_engine(store))
        validate_stac(item)
    Console().print(f"{item} (valid)")
