"""``eocube sensors``: list profiles, show a band table, decode a QA raster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.sensors.mask import MaskPolicy, invalid_mask
from pipeline.sensors.profiles import collection_table, known_profiles, load_profile, profile_for_collection
from pipeline.sensors.qa import decode_qa, flag_fractions

app = typer.Typer(help="Sensor profiles and QA decoding.", no_args_is_help=True)


@app.command("list")
def list_profiles() -> None:
    """Every sensor profile with its bands, QA assets and the collections mapped to it."""
    by_profile: dict[str, list[str]] = {}
    for cid, entry in collection_table().items():
        for pid in entry.candidates:
            by_profile.setdefault(pid, []).append(cid)
    table = Table("profile", "sensor", "bands", "QA (rule)", "collections")
    for pid in known_profiles():
        p = load_profile(pid)
        table.add_row(
            pid,
            p.sensor,
            ", ".join(p.common_names),
            f"{p.qa[0].asset} ({p.qa[0].rule})",
            ", ".join(by_profile.get(pid, [])),
        )
    Console().print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="profile id or collection id")) -> None:
    """The band table of a profile (or of a collection's profile, with its asset keys)."""
    try:
        profile = load_profile(name) if name in known_profiles() else profile_for_collection(name)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    table = Table(
        "asset",
        "common name",
        "centre (um)",
        "res (m)",
        "dtype",
        "nodata",
        "scale",
        "offset",
        title=f"{profile.id} ({profile.sensor}) {profile.title}",
    )
    for b in profile.bands:
        table.add_row(
            b.asset,
            b.common_name,
            f"{b.center_wavelength_um:g}",
            f"{b.resolution_m:g}",
            b.dtype,
            str(b.nodata),
            f"{b.scale:g}",
            f"{b.offset:g}",
        )
    for q in profile.qa:
        table.add_row(q.asset, f"QA: {q.rule}", "", f"{q.resolution_m:g}", q.dtype, "", "", "")
    Console().print(table)


@app.command("qa")
def qa(
    collection: str = typer.Argument(..., help="collection id, e.g. landsat-c2-l2"),
    asset: str = typer.Argument(..., help="QA asset key, e.g. qa_pixel, SCL, Fmask"),
    raster: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="a GeoTIFF (or any GDAL raster) of that asset"
    ),
    band: int = typer.Option(1, help="1-based band index in the raster"),
    dilation_m: float | None = typer.Option(None, help="buffer cloud/shadow by this many metres"),
) -> None:
    """Decode a QA raster: share of valid pixels per flag and the default policy's masked share."""
    import rasterio

    with rasterio.open(raster) as src:
        values = src.read(band)
        resolution = abs(src.res[0]) if src.crs and src.crs.is_projected else None
    try:
        flags = decode_qa(collection, asset, values)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    table = Table(
        "flag", "share", title=f"{raster.name}: {flags.attrs['qa_rule']} ({values.shape[0]}x{values.shape[1]})"
    )
    for name, share in flag_fractions(flags).items():
        table.add_row(name, f"{100 * share:.2f} %")
    policy = MaskPolicy(dilation_m=dilation_m or 0.0)
    masked = invalid_mask(collection, asset, values, policy, resolution_m=resolution)
    table.add_row("[bold]masked (policy)[/]", f"{100 * masked.mean():.2f} %")
    Console().print(table)
