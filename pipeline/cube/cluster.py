"""Dask clusters: a LocalCluster by default, or an existing scheduler by address."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from distributed import Client, LocalCluster

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


@contextlib.contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None,
                threads_per_worker: int = 1, memory_limit: str = "auto", timeout: str = "20s") -> Iterator[Client]:
    """A Dask client on ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else on a new LocalCluster.

    The LocalCluster uses worker processes (one thread each by default, which suits
    GDAL reads and numpy kernels that release the GIL) and is closed on exit; a
    client to an existing cluster only disconnects.
    """
    address = address or os.environ.get(SCHEDULER_ENV)
    if address:
        try:
            client = Client(address, timeout=timeout)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            yield client
        return
    n_workers = n_workers or max(1, min(4, os.cpu_count() or 1))
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                      memory_limit=memory_limit, dashboard_address=None) as cluster, Client(cluster) as client:
        yield client
