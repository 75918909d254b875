"""A written cube store -> a store of its regular-bin temporal composites."""

from __future__ import annotations

from pathlib import Path

from pipeline.cube.compositing import Method, composite
from pipeline.store.open import open_cube
from pipeline.store.paths import check_not_own_input
from pipeline.store.zarr_store import write_store


def composite_store(
    store: Path | str, out: Path | str, freq: str = "1MS", method: Method = "median", overwrite: bool = False
) -> Path:
    """Composite every band of the cube store ``store`` into bins of ``freq`` with ``method`` and write
    them (with gap statistics) to the store ``out``, on the active Dask scheduler."""
    check_not_own_input(store, out)
    cube = open_cube(Path(store))
    chunks = {"time": 1, "y": cube.chunks["y"][0], "x": cube.chunks["x"][0]}
    return write_store(composite(cube, freq, method), out, chunks, overwrite=overwrite)
