"""The chain: one request through every stage it names, on every entry point.

``eocube run`` / ``eocube backfill`` / ``eocube store update``, the Python API and the Prefect
flows in ``flows/`` all call these plain functions; the stages below them never call back up.
"""

from pipeline.chain.backfill import backfill_request, update_store
from pipeline.chain.preflight import preflight
from pipeline.chain.run import run_request
from pipeline.chain.search import search

__all__ = ["backfill_request", "preflight", "run_request", "search", "update_store"]
