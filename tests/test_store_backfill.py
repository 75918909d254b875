"""Transactional backfills on the demo archive: a killed Dask worker, a killed flow
process, a concurrent writer and an incremental update all end in a store whose data
equal an uninterrupted one-shot write (``write_store``), nothing duplicated or missing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.chain.run import assemble_and_write
from pipeline.chain.search import search
from pipeline.chain.slices import BackfillSpec, backfill, prepare, update_request
from pipeline.demo.archive import DEMO_SITE
from pipeline.model import CubeRequest
from pipeline.store.engines import open_engine
from pipeline.store.open import open_cube
from pipeline.store.status import store_status

CHUNKS = {"time": 1, "y": 50, "x": 50}


def make_request(output: Path, end: dt.date = dt.date(2022, 3, 31)) -> CubeRequest:
    return CubeRequest(
        catalog="demo",
        bbox=DEMO_SITE.aoi_lonlat(),
        start=dt.date(2022, 3, 1),
        end=end,
        sensors=["sentinel-2", "landsat"],
        resolution=20.0,
        output=output,
        chunks=CHUNKS,
    )


@pytest.fixture(scope="module")
def reference(demo_archive: Path, tmp_path_factory) -> xr.Dataset:
    """The uninterrupted one-shot store (``write_store``), loaded."""
    request = make_request(tmp_path_factory.mktemp("ref") / "ref.zarr")
    found = search(request, demo_archive)
    import dask

    with dask.config.set(scheduler="threads", num_workers=2):
        path = assemble_and_write(request, found)
    return open_cube(path).load()


def assert_same_data(store: xr.Dataset, ref: xr.Dataset) -> None:
    assert store.sizes == ref.sizes
    for c in ("time", "y", "x"):
        np.testing.assert_array_equal(store[c].values, ref[c].values)
    assert list(store["sensor"].values) == list(ref["sensor"].values)
    assert set(store.data_vars) - {"spatial_ref"} == set(ref.data_vars) - {"spatial_ref"}
    for v in ref.data_vars:
        if v != "spatial_ref":
            np.testing.assert_array_equal(store[v].values, ref[v].values, err_msg=v)
    assert 0 < float(ref["valid"].mean()) < 1


def test_backfill_survives_a_killed_dask_worker(demo_archive: Path, reference: xr.Dataset, tmp_path: Path):
    from pipeline.cube.cluster import dask_client

    request = make_request(tmp_path / "cube.zarr")
    spec = BackfillSpec(engine="zarr", tile_px=50, time_step=4, shards={"time": 2, "y": 50, "x": 50})
    found = search(request, demo_archive)
    manifest = request.output / "eocube-manifest"
    killed: list[int] = []
    with dask_client(n_workers=2) as client:
        before = set(client.run(os.getpid).values())

        def kill_a_worker_mid_run() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (manifest.is_dir() and len(list(manifest.glob("*.json"))) >= 2):
                time.sleep(0.05)
            pid = sorted(before)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        killer = threading.Thread(target=kill_a_worker_mid_run, daemon=True)
        killer.start()
        report = backfill(request, found, spec)
        killer.join(timeout=60)
        assert killed, "no worker was killed"
        after = set(client.run(os.getpid).values())
    assert killed[0] not in after, "the killed worker is still there"
    assert len(report.written) == report.planned == 12
    assert_same_data(open_engine(request.output, "zarr").open().load(), reference)
    status = store_status(request.output)
    assert status.committed_fraction == 1.0 and len(status.committed) == 12 and not status.failures
    assert prepare(request, found, spec) == [], "a re-run must find nothing to do"


def test_icechunk_backfill_then_incremental_update(demo_archive: Path, reference: xr.Dataset, tmp_path: Path):
    import dask

    store = tmp_path / "cube.icechunk"
    spec = BackfillSpec(engine="icechunk", tile_px=100, time_step=4)
    first = make_request(store, end=dt.date(2022, 3, 15))
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(first, search(first, demo_archive), spec)
        n_first = open_engine(store).open().sizes["time"]
        update = update_request(store, until=dt.date(2022, 3, 31))
        # the whole period is searched again (items published late for earlier dates are inserted)
        assert update.start == first.start and update.bands == first.bands or update.bands
        report = backfill(update, search(update, demo_archive), spec, kind="update")
    assert report.appended_times == reference.sizes["time"] - n_first > 0
    assert report.inserted_times == 0 and report.late_items_for_held_dates == 0
    engine = open_engine(store)
    assert engine.kind == "icechunk"
    ds = engine.open().load()
    assert_same_data(ds, reference)
    assert (
        ds.attrs["eocube:request"] and '"2022-03-31"' in ds.attrs["eocube:request"]
    )  # the request the store now answers
    status = store_status(store)
    assert status.committed_fraction == 1.0 and [r["kind"] for r in status.runs] == ["backfill", "update"]


def _backfill_cmd(request_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "backfill",
        str(request_file),
        "--tile-px",
        "50",
        "--time-step",
        "1",
        *extra,
    ]


@pytest.mark.slow
def test_killed_flow_process_resumes_and_a_second_writer_is_refused(
    demo_archive: Path, reference: xr.Dataset, tmp_path: Path, prefect_harness
):
    from prefect.settings import PREFECT_API_URL

    store = tmp_path / "cube.zarr"
    request_file = tmp_path / "request.yaml"
    request_file.write_text(yaml.safe_dump(make_request(store).model_dump(mode="json")))
    env = {
        **os.environ,
        "EOCUBE_DEMO_ARCHIVE": str(demo_archive),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "EOCUBE_LOCAL_WORKERS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    manifest = store / "eocube-manifest"
    first = subprocess.Popen(
        _backfill_cmd(request_file),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (manifest.is_dir() and len(list(manifest.glob("*.json"))) >= 2):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the backfill committed nothing in 240 s"
            time.sleep(0.1)
        # Freeze the run (flow process and Dask workers) so it keeps its flock but commits nothing more while
        # the second writer starts up; the kill then lands mid-run however slow that start-up is.
        os.killpg(first.pid, signal.SIGSTOP)
        done_at_kill = len(list(manifest.glob("*.json")))
        second = subprocess.run(
            _backfill_cmd(request_file, "--wait", "0"), env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2 and "locked by another writer" in second.stderr, second.stderr[-2000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert len(list(manifest.glob("*.json"))) == done_at_kill  # nothing committed while frozen
    rerun = subprocess.run(_backfill_cmd(request_file), env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    total = len(list(manifest.glob("*.json")))  # 4 tiles x 12 time steps: many slices, so the kill lands mid-run
    assert 2 <= done_at_kill < total
    assert f"{total - done_at_kill} of {total - done_at_kill} pending slices written" in " ".join(rerun.stdout.split())
    assert_same_data(open_cube(store).load(), reference)
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(store), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and '"committed_fraction": 1.0' in status.stdout, status.stderr[-2000:]
