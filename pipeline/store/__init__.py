"""Analysis-ready Zarr v3 stores: CF metadata, provenance, atomic writes."""
from pipeline.store.zarr_store import StoreError, annotate_cf, write_store

__all__ = ["StoreError", "annotate_cf", "write_store"]
