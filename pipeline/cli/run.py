"""``eocube run`` / ``demo`` / ``demo-archive`` / ``catalogs``: a request through the chain, and what it reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import print_failed_items, progress_display, read_request_file, user_errors
from pipeline.model import ChainResult, CubeRequest, ProductResult

app = typer.Typer(add_completion=False)


def print_result(result: ChainResult, skipped: dict[str, str] | None = None) -> None:
    """The cube's summary and one row per derived product (what made it, its units not computed)."""
    cube = result.cube
    table = Table(title="eocube: store written", show_header=False, title_justify="left")
    table.add_row("store", f"{result.store} ({result.format})")
    table.add_row("items per sensor", ", ".join(f"{k}: {v}" for k, v in cube.items_per_sensor.items()))
    table.add_row("time steps per sensor", ", ".join(f"{k}: {v}" for k, v in cube.time_steps_per_sensor.items()))
    table.add_row("cube shape", " x ".join(f"{k}={v}" for k, v in cube.shape.items()))
    table.add_row("bands", ", ".join(cube.bands))
    table.add_row("masked fraction", f"{cube.masked_fraction:.1%}")
    table.add_row("quicklook", str(cube.quicklook))
    table.add_row(
        "failed items",
        f"{len(cube.failed_items)} (pixels masked where their reads failed)" if cube.failed_items else "none",
    )
    for product in result.products:
        missing = f", {len(product.not_computed)} units not computed" if product.not_computed else ""
        table.add_row(
            product.name, f"{', '.join(product.variables)} {product.shape}; {product_origin(product)}{missing}"
        )
    for name, why in (skipped or {}).items():
        table.add_row(name, f"skipped: {why}")
    table.add_row("STAC item", str(result.stac_item))
    table.add_row("elapsed", f"{result.seconds:.1f} s" if result.seconds else "-")
    Console().print(table)
    print_failed_items(cube.failed_items)


def product_origin(product: ProductResult) -> str:
    """One line saying what made a product: the model and weights, the artefact, the codec settings."""
    p = product.provenance
    if "weights_sha256" in p:
        return f"{p.get('model')} weights sha256 {str(p['weights_sha256'])[:12]}"
    if "eocube:artefact" in p:
        a = json.loads(p["eocube:artefact"])
        alpha = a.get("alpha")
        alpha = ", ".join(f"{v:.3f}" for v in alpha) if isinstance(alpha, list) else alpha
        calibration = a.get("calibration")
        calibration = calibration.get("description", calibration) if isinstance(calibration, dict) else calibration
        sha = a.get("sha256")
        sha = next(iter(sha.values()), "") if isinstance(sha, dict) else sha
        return f"{a.get('method')}, learned drop rate {alpha}; {calibration}; artefact sha256 {str(sha)[:12]}"
    if "eocube:video" in p:
        v = json.loads(p["eocube:video"])
        return ", ".join(f"{k} {v[k]}" for k in ("mode", "qp", "sample_psnr_db", "bpppb") if v.get(k) is not None)
    return "made"


@app.command()
def demo(
    out: Path = typer.Option(Path("eocube-demo"), help="output folder (stores, quicklook)"),
    dask_address: str | None = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
    archive: Path | None = typer.Option(None, help="demo archive folder (default ~/.cache/eocube/demo-archive)"),
) -> None:
    """The demo request (pipeline/demo/request.yaml) through the whole chain: cube, composite, embeddings,
    uncertainty, video; resumable (a second run makes only what is missing)."""
    from pipeline.chain.demo import demo_request, run_demo
    from pipeline.chain.preflight import preflight

    with user_errors():
        preflight(demo_request(out, with_uncertainty=False), resume=True)
        t0 = time.perf_counter()
        with progress_display() as progress:
            result, skipped = run_demo(out, archive=archive, dask_address=dask_address, progress=progress)
        result.seconds = round(time.perf_counter() - t0, 1)
        print_result(result, skipped)


@app.command()
def run(
    request_file: Path | None = typer.Argument(None, help="request YAML/JSON (fields of CubeRequest)"),
    catalog: str | None = typer.Option(None, help="catalog name or YAML path"),
    bbox: str | None = typer.Option(None, help="min_lon,min_lat,max_lon,max_lat"),
    start: str | None = typer.Option(None, help="YYYY-MM-DD"),
    end: str | None = typer.Option(None, help="YYYY-MM-DD"),
    sensors: str | None = typer.Option(None, help="comma-separated, e.g. sentinel-2,landsat"),
    resolution: float | None = typer.Option(None, help="pixel size, metres"),
    crs: str | None = typer.Option(None, help="output CRS (default: UTM zone of the AOI)"),
    bands: str | None = typer.Option(None, help="comma-separated common band names"),
    max_cloud_cover: float | None = typer.Option(None, help="item cloud cover pre-filter, %"),
    out: Path | None = typer.Option(None, help="output store path (.zarr)"),
    overwrite: bool = typer.Option(
        False, help="replace an existing eocube store at the output path (never anything else)"
    ),
    dask_address: str | None = typer.Option(None, envvar="DASK_SCHEDULER_ADDRESS", help="existing Dask scheduler"),
) -> None:
    """Build a cube for a request given as a file and/or options."""
    with user_errors():
        fields: dict = {}
        if request_file is not None:
            fields.update(read_request_file(request_file))
        options = {
            "catalog": catalog,
            "start": start,
            "end": end,
            "resolution": resolution,
            "crs": crs,
            "max_cloud_cover": max_cloud_cover,
            "output": out,
        }
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
            result = run_request(request, dask_address=dask_address, progress=progress)
        print_result(result)


@app.command("demo-archive")
def demo_archive(out: Path | None = typer.Option(None, help="folder (default ~/.cache/eocube/demo-archive)")) -> None:
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
        Console().print(
            f"[bold]{name}[/] ({c.kind}) {c.url or ''}: "
            + ", ".join(f"{s}={r.collection}" for s, r in c.collections.items())
        )
