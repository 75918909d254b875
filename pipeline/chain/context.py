"""What a run settles once, before its units: artefacts loaded and checked, the embedding device, the video plan."""

from __future__ import annotations

import json
import logging

import xarray as xr

from pipeline.chain.products import Context, spatial_chunk
from pipeline.model import CubeRequest, required
from pipeline.store.engines import Engine

log = logging.getLogger(__name__)


def embedding_device(choice: str) -> str:
    """``cuda`` where the embeddings should run on GPU workers, else ``cpu`` (one log line says which).

    ``auto`` uses GPU workers when the active Dask cluster has any (workers started with the
    resource ``GPU``), else the local GPU when there is no cluster, else the CPU: a cluster
    without a GPU worker runs the embedding tasks on its CPU workers instead of waiting.
    """
    if choice == "cpu":
        return "cpu"
    try:
        from distributed import default_client

        workers = default_client().scheduler_info()["workers"].values()
        gpus = sum(1 for w in workers if w.get("resources", {}).get("GPU"))
        cluster = True
    except (ImportError, ValueError):
        import torch

        gpus, cluster = int(torch.cuda.is_available()), False
    if gpus:
        log.info("embeddings run on %d GPU %s", gpus, "worker(s)" if cluster else "device(s)")
        return "cuda"
    log.warning(
        "embeddings run on the CPU%s: no GPU %s",
        " workers" if cluster else "",
        "worker in the cluster" if cluster else "on this machine",
    )
    return "cpu"


def video_plan(request: CubeRequest, engine: Engine, cube: xr.Dataset, tile_px: int):
    """The video product's plan: the existing group's (its codec settings and band records, so every unit of
    a store is coded alike) or, for a new group, one chosen by rate control on sample chunks of the cube,
    with spatial chunks that never straddle two tiles (a lossy chunk is coded once, whole)."""
    from pipeline.compression.codec import CodecParams
    from pipeline.compression.stage import BAND_DTYPES_ATTR, STACKED, VideoPlan, as_dataset, plan_video

    section = required(request.compress, "compress")
    group = engine.open_group("video")
    if group is not None and STACKED in group:
        record = json.loads(group.attrs["eocube_compression"])
        params = CodecParams.from_json(record["codec"]["configuration"])
        time_c, y_c, x_c = (int(c) for c in group[STACKED].encoding["chunks"][1:])
        records = json.loads(group[STACKED].attrs.get(BAND_DTYPES_ATTR, "{}"))
        peak = params.value_range[1] - params.value_range[0]
        return VideoPlan(record["bands"], record["lossless"], records, (time_c, y_c, x_c), params, peak)
    params = CodecParams(mode=section.mode) if section.qp is None else CodecParams(mode=section.mode, qp=section.qp)
    # the cube's own band order (a store lists its arrays in no set order, and the order decides the streams)
    bands = section.bands or [b for b in cube.attrs.get("eocube:bands", []) if b in cube.data_vars] or None
    return plan_video(
        as_dataset(cube),
        params,
        section.target_psnr,
        section.target_bpppb,
        bands=bands,
        lossless=["valid"] if "valid" in cube.data_vars else None,
        space_chunk=spatial_chunk(tile_px),
        auto_value_range=section.mode == "lossy",
    )


def resolve_context(request: CubeRequest, engine: Engine, tile_px: int) -> Context:
    """The :class:`~pipeline.chain.products.Context` of a run: its artefacts loaded (their inputs checked
    against the store), the embedding device, the video plan."""
    ctx = Context(request)
    cube = engine.open()
    if request.uncertainty is not None:
        from pipeline.uncertainty.artefact import load_artefact

        ctx.uncertainty = load_artefact(request.uncertainty.model)
    if request.embed is not None:
        ctx.device = embedding_device(request.embed.device)
        if request.embed.head is not None:
            from pipeline.uncertainty.head import load_head

            ctx.head = load_head(request.embed.head)
    if request.compress is not None:
        ctx.video_plan = video_plan(request, engine, cube, tile_px)
    return ctx
