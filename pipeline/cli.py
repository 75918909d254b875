"""The ``eocube`` command line (also ``python -m pipeline``)."""
from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.model import CubeRequest
from pipeline.redaction import redact

#: ``eocube --debug`` or ``EOCUBE_DEBUG=1``: library logs and full (redacted) tracebacks on stderr.
DEBUG = os.environ.get("EOCUBE_DEBUG", "").lower() in ("1", "true", "yes")


def _quiet_libraries(debug: bool) -> None:
    """The progress display, the summary and one-line errors are the output; library chatter and
    the tracebacks Prefect logs for a failed run only with ``--debug``. Set before Prefect and Dask
    configure their logging (they are imported later, by the commands)."""
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO" if debug else os.environ.get("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "info" if debug else os.environ.get("DASK_LOGGING__DISTRIBUTED", "error")


_quiet_libraries(DEBUG)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The local (ephemeral) Prefect API starts with the first flow run; give it time on busy machines.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Earth-observation data cubes: STAC search -> cloud-masked cube -> Zarr.")
console = Console(stderr=True)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show library logs and full tracebacks (redacted)")) -> None:
    global DEBUG
    if debug and not DEBUG:
        DEBUG = True
        _quiet_libraries(True)


#: Errors that are the user's to fix: printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ConnectionError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        text = "invalid request: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(" ".join(text.split()))


def print_error(exc: BaseException, prefix: str = "") -> None:
    """``error: <one line>`` on stderr (redacted); with ``--debug`` the redacted traceback first."""
    if DEBUG:
        console.print(redact("".join(traceback.format_exception(exc))), highlight=False, markup=False)
    console.print(f"[bold red]error:[/] {prefix}{_one_line(exc)}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors (a :data:`USER_ERRORS` or a store that cannot be used) into
    ``error: <one line>`` and exit code 2."""
    from pipeline.store.zarr_store import StoreError

    try:
        yield
    except (*USER_ERRORS, StoreError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None


@contextmanager
def progress_display() -> Iterator:
    """A rich progress display; yields a ``progress(stage, done, total)`` callback."""
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def print_summary(summary) -> None:
    table = Table(title="eocube: cube written", show_header=False, title_justify="left")
    table.add_row("store", summary.store)
    table.add_row("items per sensor", ", ".join(f"{k}: {v}" for k, v in summary.items_per_sensor.items()))
    table.add_row("time steps per sensor", ", ".join(f"{k}: {v}" for k, v in summary.time_steps_per_sensor.items()))
    table.add_row("cube shape", " x ".join(f"{k}={v}" for k, v in summary.shape.items()))
    table.add_row("bands", ", ".join(summary.bands))
    table.add_row("masked fraction", f"{summary.masked_fraction:.1%}")
    table.add_row("quicklook", str(summary.quicklook))
    table.add_row("failed items", f"{len(summary.failed_items)} (pixels masked where their reads failed)"
                  if summary.failed_items else "none")
    table.add_row("elapsed", f"{summary.seconds:.1f} s" if summary.seconds else "-")
    Console().print(table)
    from pipeline.store.cli import print_failed_items

    print_failed_items(summary.failed_items)


def _run(request: CubeRequest, dask_address: Optional[str], archive: Optional[Path] = None) -> None:
    import time

    from flows.build_cube import build_cube
    from pipeline.job import preflight

    preflight(request)  # before the search and the cluster: a bad request costs nothing
    t0 = time.perf_counter()
    with progress_display() as progress:
        summary = build_cube(request, archive=archive, dask_address=dask_address, progress=progress)
    summary.seconds = round(time.perf_counter() - t0, 1)
    print_summary(summary)


def demo_request(out: Path) -> CubeRequest:
    """The embedded default: the demo AOI, its whole year, all three sensors at 10 m (replacing
    the demo's own earlier stores in ``out``; nothing else there is touched)."""
    from pipeline.demo.archive import DEMO_SITE

    return CubeRequest(catalog="demo", bbox=DEMO_SITE.aoi_lonlat(), start=DEMO_SITE.start, end=DEMO_SITE.end,
                       sensors=["sentinel-2", "landsat", "modis"], resolution=10.0, output=out / "demo-cube.zarr",
                       overwrite=True)


def print_demo_summary(summary) -> None:
    print_summary(summary.cube)
    table = Table(title="eocube: later stages", show_header=False, title_justify="left")
    table.add_row("monthly composite", str(summary.monthly_store))
    if summary.embeddings:
        e = summary.embeddings
        table.add_row("embeddings", f"{e.get('model')} {e.get('sizes')} sha256={str(e.get('weights_sha256'))[:12]}…")
    for stage, why in summary.skipped.items():
        table.add_row(stage, f"skipped: {why}")
    u = summary.uncertainty
    table.add_row("uncertainty", f"{u['store']} ({u['method']}, learned alpha={u['alpha_learned']}, "
                                 f"mean sigma={u['mean_sigma_percent']} %, {u['calibration']})")
    c = summary.compression
    table.add_row("compression", f"{c['store']} ({c['mode']} qp={c['qp']}, {c['bpppb']:.2f} bpppb, "
                                 f"ratio {c['raw_bytes'] / max(c['stored_bytes'], 1):.1f}x, PSNR {c['psnr']:.1f} dB "
                                 f"at peak {c['psnr_peak']}; quicklook {c.get('quicklook')})")
    Console().print(table)


def read_request_file(path: Path) -> dict:
    """The fields of a request YAML/JSON file; a missing or malformed file is one line."""
    if not path.is_file():
        raise FileNotFoundError(f"request file {path} does not exist")
    try:
        fields = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"request file {path} is not valid YAML/JSON: {' '.join(str(exc).split())}") from None
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise ValueError(f"request file {path} must hold a mapping of request fields, not a {type(fields).__name__}")
    return fields


@app.command()
def demo(out: Path = typer.Option(Path("eocube-demo"), help="output folder (stores, quicklook)"),
         dask_address: Optional[str] = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
         archive: Optional[Path] = typer.Option(None, help="demo archive folder (default ~/.cache/eocube/demo-archive)")) -> None:
    """Run the whole pipeline on the embedded demo catalog, end to end (cube, embeddings, uncertainty, compression)."""
    import time

    from flows.demo import demo_flow
    from pipeline.job import preflight

    with user_errors():
        request = demo_request(out)
        preflight(request)
        t0 = time.perf_counter()
        with progress_display() as progress:
            summary = demo_flow(request, archive=archive, dask_address=dask_address, progress=progress)
        summary.cube.seconds = round(time.perf_counter() - t0, 1)
        print_demo_summary(summary)


@app.command()
def run(request_file: Optional[Path] = typer.Argument(None, help="request YAML/JSON (fields of CubeRequest)"),
        catalog: Optional[str] = typer.Option(None, help="catalog name or YAML path"),
        bbox: Optional[str] = typer.Option(None, help="min_lon,min_lat,max_lon,max_lat"),
        start: Optional[str] = typer.Option(None, help="YYYY-MM-DD"),
        end: Optional[str] = typer.Option(None, help="YYYY-MM-DD"),
        sensors: Optional[str] = typer.Option(None, help="comma-separated, e.g. sentinel-2,landsat"),
        resolution: Optional[float] = typer.Option(None, help="pixel size, metres"),
        crs: Optional[str] = typer.Option(None, help="output CRS (default: UTM zone of the AOI)"),
        bands: Optional[str] = typer.Option(None, help="comma-separated common band names"),
        max_cloud_cover: Optional[float] = typer.Option(None, help="item cloud cover pre-filter, %"),
        out: Optional[Path] = typer.Option(None, help="output store path (.zarr)"),
        overwrite: bool = typer.Option(False, help="replace an existing eocube store at the output path "
                                                   "(never anything else)"),
        dask_address: Optional[str] = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler")) -> None:
    """Build a cube for a request given as a file and/or options."""
    with user_errors():
        fields: dict = {}
        if request_file is not None:
            fields.update(read_request_file(request_file))
        options = {"catalog": catalog, "start": start, "end": end, "resolution": resolution, "crs": crs,
                   "max_cloud_cover": max_cloud_cover, "output": out}
        fields.update({k: v for k, v in options.items() if v is not None})
        if overwrite:
            fields["overwrite"] = True
        if bbox:
            try:
                fields["bbox"] = tuple(float(v) for v in bbox.split(","))
            except ValueError:
                raise ValueError(f"bbox {bbox!r} is not four comma-separated numbers") from None
        if sensors:
            fields["sensors"] = [s.strip() for s in sensors.split(",") if s.strip()]
        if bands:
            fields["bands"] = [b.strip() for b in bands.split(",") if b.strip()]
        request = CubeRequest.model_validate(fields)
        _run(request, dask_address)


@app.command("demo-archive")
def demo_archive(out: Optional[Path] = typer.Option(None, help="folder (default ~/.cache/eocube/demo-archive)")) -> None:
    """Generate the embedded demo archive (COGs + STAC items); deterministic, seeded."""
    from pipeline.job import ensure_demo_archive

    with progress_display() as progress:
        path = ensure_demo_archive(out, progress)
    manifest = json.loads((path / "manifest.json").read_text())
    Console().print(f"demo archive at {path}: " + ", ".join(f"{k} {v} items" for k, v in manifest["items"].items()))


@app.command()
def catalogs() -> None:
    """List the catalog definitions and the collections they serve."""
    from pipeline.catalog.config import known_catalogs, load_catalog

    for name in known_catalogs():
        c = load_catalog(name)
        Console().print(f"[bold]{name}[/] ({c.kind}) {c.url or ''}: " + ", ".join(f"{s}={r.collection}" for s, r in c.collections.items()))


from pipeline.store import cli as _store_cli  # noqa: E402  (store operations: eocube status / backfill)

app.command("status")(_store_cli.status)
app.command("backfill")(_store_cli.backfill)


def _mount_stage_commands() -> None:
    """Each stage's own typer app, as ``eocube <stage> ...``."""
    from pipeline.compression.cli import app as compress_app
    from pipeline.cube.cli import app as cube_app
    from pipeline.embeddings.cli import app as embed_app
    from pipeline.sensors.cli import app as sensors_app
    from pipeline.store.cli import app as store_app
    from pipeline.uncertainty.cli import app as uncertainty_app

    app.add_typer(sensors_app, name="sensors", help="Sensor profiles and QA decoding.")
    app.add_typer(cube_app, name="cube", help="Cube utilities: temporal composites of a store.")
    app.add_typer(embed_app, name="embed", help="Foundation-model embeddings of a cube store.")
    app.add_typer(uncertainty_app, name="uncertainty", help="Temporal-dropout uncertainty regression.")
    app.add_typer(compress_app, name="compress", help="Video compression of cubes.")
    app.add_typer(store_app, name="store", help="Stores: backfill, update, status, STAC.")


_mount_stage_commands()


def main() -> None:
    """Entry point of the ``eocube`` console script: any error is one line (exit 1), the traceback with ``--debug``."""
    try:
        app()
    except Exception as exc:  # not a user error (those exit 2 inside the commands)
        print_error(exc, prefix=f"{type(exc).__name__}: ")
        if not DEBUG:
            console.print("(run again with eocube --debug to see the traceback)", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
