"""Dask for real: a `dask scheduler` and two `dask worker` processes on loopback (free ports),
a cube built through them by address and by $DASK_SCHEDULER_ADDRESS, equal to the threaded one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_cube_support import demo_found, small_request

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """``tcp://127.0.0.1:<port>`` of a scheduler with two single-threaded workers (subprocesses)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask-logs")
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=open(logs / "scheduler.log", "w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--memory-limit",
                    "1GB",
                    "--name",
                    f"w{i}",
                ],
                stdout=open(logs / f"worker{i}.log", "w"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    try:
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_cube_through_an_external_cluster_equals_the_threaded_cube(
    external_cluster: str, demo_archive: Path, monkeypatch
):
    from distributed import get_task_stream

    from pipeline.cube import build_cube, dask_client, request_geobox

    request = small_request(sensors=["sentinel-2", "landsat"])
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    bands = ["red", "swir16"]
    local = build_cube(request, found, geobox, bands).compute(scheduler="threads")
    with dask_client(external_cluster) as client, get_task_stream(client) as stream:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = build_cube(request, found, geobox, bands).compute()
    assert len({t["worker"] for t in stream.data}) == 2, "tasks ran on both worker processes"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_cluster)
    with dask_client() as client:
        assert client.scheduler.address == external_cluster
    for v in (*bands, "valid"):
        np.testing.assert_array_equal(local[v].values, remote[v].values, err_msg=v)
    assert float(remote["valid"].mean()) > 0.2


def test_eocubes_local_workers_reuse_large_buffers_and_a_users_dask_config_wins(monkeypatch):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which alone freezes glibc's mmap threshold at 128 KiB; eocube's
    workers get a fixed 32 MiB one beside it, unless the user's Dask configuration says otherwise."""
    import dask

    from pipeline.cube import dask_client

    def malloc_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}

    # the nanny also sets them in this process, where they would then override any configuration
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    with dask_client(n_workers=1) as client:
        (env,) = client.run(malloc_env).values()
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20) and "MALLOC_TRIM_THRESHOLD_" in env
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 2**20}):
        with dask_client(n_workers=1) as client:
            (env,) = client.run(malloc_env).values()
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(2**20)


def test_unreachable_scheduler_is_a_clear_error():
    from pipeline.cube import dask_client

    with pytest.raises(ConnectionError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:\d+"):
        with dask_client(f"tcp://127.0.0.1:{_free_port()}", timeout="2s"):
            pass
