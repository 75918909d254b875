"""Work items run side by side on threads of this process, their Dask work on the active scheduler."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: items in flight at once: while one writes and commits, the other keeps the Dask workers busy
SIDE_BY_SIDE = 2


def distributed_client() -> Any | None:
    """The active ``distributed.Client``, or None (no distributed scheduler in use)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def side_by_side(fn: Callable[[T], R], items: Iterable[T], n: int = SIDE_BY_SIDE) -> Iterator[R]:
    """``fn(item)`` for every item, ``n`` at a time, the results in the items' order. A failure (or ctrl-c)
    cancels the items not started and is raised without waiting for those in flight (nothing they do is
    committed until they finish)."""
    pool = ThreadPoolExecutor(max(1, n))
    try:
        yield from pool.map(fn, items)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
