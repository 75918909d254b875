"""Analysis-ready Zarr v3 stores: CF/GeoZarr metadata, sharding, overviews, STAC, transactional backfills."""

from pipeline.store.cf import annotate_cf, encodings
from pipeline.store.layout import LayoutError, Slice, StoreLayout, check_alignment, plan_slices
from pipeline.store.zarr_store import StoreError, write_store

__all__ = [
    "LayoutError",
    "Slice",
    "StoreError",
    "StoreLayout",
    "annotate_cf",
    "check_alignment",
    "encodings",
    "plan_slices",
    "write_store",
]
