"""Prefect flow: compress a cube store with the video codec (thin wrapper over pipeline.compression)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from pipeline.compression.codec import CodecParams
from pipeline.compression.stage import compress_cube, summary_dict


@task(name="compress-cube")
def compress_task(
    src: str, out: str, params: dict, target_psnr: float | None, target_bpppb: float | None, overwrite: bool = False
) -> dict:
    """Run the compression stage and return its summary as a dict (``value_range="auto"``: from the samples)."""
    params = dict(params)
    auto = params.get("value_range") == "auto"
    if auto:
        del params["value_range"]
    return summary_dict(
        compress_cube(
            Path(src),
            Path(out),
            CodecParams.from_json({**CodecParams().to_json(), **params}),
            target_psnr=target_psnr,
            target_bpppb=target_bpppb,
            auto_value_range=auto,
            overwrite=overwrite,
        )
    )


@flow(name="eocube-compress")
def compress_flow(
    src: str,
    out: str,
    params: dict | None = None,
    target_psnr: float | None = None,
    target_bpppb: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Compress the cube store ``src`` into ``out`` (an eocube store already there is replaced only with
    ``overwrite``); ``params`` overrides CodecParams fields (``{"value_range": "auto"}`` picks the nearest
    usual range covering the sample chunks)."""
    return compress_task(src, out, params or {}, target_psnr, target_bpppb, overwrite)
