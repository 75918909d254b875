"""Prefect flow ``eocube-demo``: the demo request through the chain. Thin: it calls :func:`pipeline.chain.demo.run_demo`."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipeline.chain.demo import run_demo


@flow(name="eocube-demo", log_prints=True)
def demo_flow(
    out: Path, archive: Path | None = None, dask_address: str | None = None, changes: dict | None = None
) -> dict:
    """The whole chain on the demo archive into ``out`` (``changes``: request fields to change, e.g. the period);
    the chain's result (and the sections skipped) as JSON."""
    result, skipped = run_demo(Path(out), archive, dask_address, **(changes or {}))
    return {**result.to_dict(), "skipped": skipped}
