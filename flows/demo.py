"""Prefect flow ``eocube-demo``: every stage on the embedded demo catalog, end to end. Thin: it calls
:func:`pipeline.chain.demo.run_demo`."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipeline.chain.demo import DemoSummary, run_demo
from pipeline.model import Progress
from pipeline.model import CubeRequest


@flow(name="eocube-demo", log_prints=True)
def demo_flow(request: CubeRequest, archive: Path | None = None, dask_address: str | None = None,
              progress: Progress | None = None) -> DemoSummary:
    """The whole pipeline on the demo: each later stage is skipped (with the reason) if it cannot run."""
    return run_demo(CubeRequest.model_validate(request), archive, dask_address, progress)
