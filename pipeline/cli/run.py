"""``eocube run`` / ``demo`` / ``demo-archive`` / ``catalogs``: a request through the chain, and what it reads."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import print_failed_items, progress_display, read_request_file, user_errors
from pipeline.model import CubeRequest

app = typer.Typer(add_completion=False)


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
    print_failed_items(summary.failed_items)


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


@app.command()
def demo(out: Path = typer.Option(Path("eocube-demo"), help="output folder (stores, quicklook)"),
         dask_address: Optional[str] = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
         archive: Optional[Path] = typer.Option(None, help="demo archive folder (default ~/.cache/eocube/demo-archive)")) -> None:
    """Run the whole pipeline on the embedded demo catalog, end to end (cube, embeddings, uncertainty, compression)."""
    from pipeline.chain.demo import run_demo
    from pipeline.chain.preflight import preflight

    with user_errors():
        request = demo_request(out)
        preflight(request)
        t0 = time.perf_counter()
        with progress_display() as progress:
            summary = run_demo(request, archive=archive, dask_address=dask_address, progress=progress)
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
        from pipeline.chain import run_request
        from pipeline.chain.preflight import preflight

        preflight(request)  # before the progress display: a bad request is one line
        with progress_display() as progress:
            summary = run_request(request, dask_address=dask_address, progress=progress)
        print_summary(summary)


@app.command("demo-archive")
def demo_archive(out: Optional[Path] = typer.Option(None, help="folder (default ~/.cache/eocube/demo-archive)")) -> None:
    """Generate the embedded demo archive (COGs + STAC items); deterministic, seeded."""
    from pipeline.demo.archive import ensure_demo_archive

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
