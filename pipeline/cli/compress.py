"""``eocube compress``: video compression of cubes (mounted in pipeline.cli as a sub-command)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.compression.codec import KLT_SCOPES, MODES, CodecParams
from pipeline.compression.video import DEFAULT_PRESET, QP_MAX, QP_MIN
from pipeline.model import one_of

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Video compression of cubes (x265 / ffv1 in Zarr v3)."
)


def _range(text: str) -> tuple[float, float]:
    if text.strip().lower() == "auto":
        return CodecParams().value_range  # replaced by the stage from the sample chunks
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not 'lo,hi'") from None
    return lo, hi


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


@app.command()
def run(
    src: Path = typer.Argument(..., help="input cube (.zarr store or NetCDF)"),
    out: Path = typer.Argument(..., help="output Zarr v3 store"),
    mode: str = typer.Option("lossy", help="lossy (libx265 12-bit) or lossless (ffv1)"),
    target_psnr: float | None = typer.Option(
        None,
        help="rate control: PSNR target in dB at peak = hi - lo of "
        "--value-range (with auto: of the range chosen from the sample "
        "chunks); the summary reports psnr at that psnr_peak",
    ),
    target_bpppb: float | None = typer.Option(
        None, help="rate control: bits per pixel per band, met on the whole cube to within 2 %"
    ),
    qp: float = typer.Option(
        12, help=f"libx265 QP when no target is given ({QP_MIN} best .. {QP_MAX}; fractions from 0 up)"
    ),
    klt: bool = typer.Option(True, help="KLT/PCA across bands before coding"),
    klt_scope: str = typer.Option(
        "auto",
        help="one KLT rotation per date, one per chunk, or auto: per date "
        "where that is predicted to save bits (date / chunk / auto)",
    ),
    preset: str = typer.Option(DEFAULT_PRESET, help="libx265 preset, or fast+rdo (fast with rdoq-level 2)"),
    value_range: str = typer.Option(
        "auto",
        help="fixed physical range lo,hi quantised to 12 bits (lossy), "
        "or auto: the nearest usual range covering the sample chunks "
        "(0,1 / 0,2 / 0,10000 / 0,20000 / 0,65535 ...)",
    ),
    step: float | None = typer.Option(
        None,
        help="lossless grid step for float bands (e.g. 1e-4; default: "
        "the coarsest grid the values lie on, found per chunk)",
    ),
    time_chunk: int = typer.Option(32, help="frames per chunk (keyframe interval <= this)"),
    space_chunk: int = typer.Option(256, help="pixels per chunk side"),
    bands: str | None = typer.Option(
        None,
        help="band variables to video-code, comma-separated "
        "(default: every variable on (time, y, x) but classes/QA/masks)",
    ),
    lossless: str | None = typer.Option(
        None,
        help="variables to code lossless, comma-separated "
        "(default: classes, QA and masks such as SCL, QA_PIXEL, valid)",
    ),
    quicklook: bool = typer.Option(
        True, help="write OUT's name with .quicklook.png: original vs decoded and the error"
    ),
    overwrite: bool = typer.Option(False, help="replace an eocube store already at OUT"),
) -> None:
    """Compress a cube to a video-coded Zarr v3 store and print a JSON summary."""
    from pipeline.cli.common import progress_display
    from pipeline.compression.stage import compress_cube, summary_dict

    try:
        params = CodecParams(
            mode=one_of(mode, MODES, "mode"),
            qp=qp,
            klt=klt,
            klt_scope=one_of(klt_scope, KLT_SCOPES, "klt_scope"),
            preset=preset,
            value_range=_range(value_range),
            step=step,
        )
        with progress_display() as progress:
            summary = compress_cube(
                src,
                out,
                params,
                target_psnr=target_psnr,
                target_bpppb=target_bpppb,
                time_chunk=time_chunk,
                space_chunk=space_chunk,
                bands=_names(bands),
                lossless=_names(lossless),
                progress=progress,
                quicklook=out.with_suffix(".quicklook.png") if quicklook else None,
                auto_value_range=value_range.strip().lower() == "auto",
                overwrite=overwrite,
            )
    except (ValueError, FileNotFoundError, TypeError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary_dict(summary), indent=2))


@app.command()
def info(store: Path = typer.Argument(..., help="compressed Zarr v3 store")) -> None:
    """Print the codec settings a store was written with."""
    import zarr

    if not store.exists():
        typer.echo(f"error: store {store} does not exist", err=True)
        raise typer.Exit(2)
    record = zarr.open_group(store, mode="r").attrs.get("eocube_compression")
    if not isinstance(record, str):
        typer.echo(f"error: {store} was not written by eocube compress", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(json.loads(record), indent=2))
