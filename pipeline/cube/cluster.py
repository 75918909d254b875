"""Dask clusters: a LocalCluster by default, or an existing scheduler by address."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import dask.config
from distributed import Client, LocalCluster

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

#: Environment of the worker processes a nanny starts, beside Dask's own. Dask sets glibc's
#: ``MALLOC_TRIM_THRESHOLD_`` so workers give memory back; setting any malloc threshold also freezes glibc's
#: mmap threshold at 128 KiB, so every larger temporary (numpy, torch) is mapped and unmapped afresh, which
#: doubles the CPU time of the uncertainty model's passes. A fixed 32 MiB threshold (where glibc's own
#: adaptive one tops out on 64-bit) keeps both: trimmed heaps and reused buffers. Defaults only: a user's
#: Dask configuration still wins. Workers started outside eocube (``dask worker``) need it in their
#: environment (see ``docker-compose.yml``).
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20}
dask.config.update_defaults({"distributed": {"nanny": {"pre-spawn-environ": WORKER_ENVIRON}}})

#: LocalCluster options: no dashboard (it needs bokeh), and the scheduler's HTTP endpoints on a free
#: port rather than 8787, which a second cluster on the machine would find taken (and warn about)
QUIET_HTTP: dict = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}


@contextlib.contextmanager
def dask_client(
    address: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
    timeout: str = "20s",
) -> Iterator[Client]:
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
    with workers_ignore_ctrl_c():
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            **QUIET_HTTP,
        )
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with ctrl-c ignored (a started Python keeps a SIGINT its parent ignored), so that
    ctrl-c in a terminal, which reaches the whole process group, interrupts this process alone: it then closes
    the cluster in order instead of every worker printing its own KeyboardInterrupt traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
