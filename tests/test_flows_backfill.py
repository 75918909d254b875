"""The store flows through a real local Prefect API: a backfill on a DaskTaskRunner,
cached searches, a served deployment triggered with ``run_deployment``, and ``prefect.yaml``."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.demo.archive import DEMO_SITE
from pipeline.model import CubeRequest
from pipeline.store.open import open_cube
from pipeline.store.status import store_status

REPO = Path(__file__).resolve().parents[1]


def make_request(output: Path, end: dt.date) -> CubeRequest:
    return CubeRequest(
        catalog="demo",
        bbox=DEMO_SITE.aoi_lonlat(),
        start=dt.date(2022, 3, 1),
        end=end,
        sensors=["sentinel-2", "landsat"],
        resolution=20.0,
        output=output,
        chunks={"time": 1, "y": 50, "x": 50},
    )


@pytest.fixture(autouse=True)
def quiet_prefect(monkeypatch):
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")


def test_backfill_flow_runs_slices_on_dask_and_caches_searches(demo_archive: Path, tmp_path: Path, prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.backfill import backfill_flow, search_task

    request = make_request(tmp_path / "cube.icechunk", dt.date(2022, 3, 20))
    state = backfill_flow(request, engine="icechunk", tile_px=100, time_step=4, archive=demo_archive, return_state=True)
    report = state.result()
    assert report["planned"] == len(report["written"]) >= 2
    status = store_status(request.output)
    assert status.committed_fraction == 1.0 and status.engine == "icechunk"

    async def task_states():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )
            return [(r.name, r.state.name) for r in runs]

    import asyncio

    states = asyncio.run(task_states())
    slice_runs = [s for n, s in states if n.startswith("slice ")]
    assert len(slice_runs) == report["planned"] and set(slice_runs) == {"Completed"}

    @flow
    def search_twice():
        a = search_task(request, demo_archive, return_state=True)
        b = search_task(request, demo_archive, return_state=True)
        return a.name, b.name

    assert search_twice()[1] == "Cached", "the second identical search must be served from the cache"


def test_served_deployment_runs_an_incremental_update(demo_archive: Path, tmp_path: Path, prefect_harness):
    import dask
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from pipeline.chain.search import search
    from pipeline.chain.slices import BackfillSpec, backfill

    store = tmp_path / "cube.zarr"
    request = make_request(store, dt.date(2022, 3, 20))
    found = search(request, demo_archive)  # less the Landsat item of 03-14: published late, after this backfill
    late = "LC08_L2SP_193028_20220314_02_T1"
    found["landsat"] = replace(found["landsat"], items=[i for i in found["landsat"].items if i.id != late])
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, found, BackfillSpec(tile_px=100, time_step=4))
    n_before = store_status(store).shape["time"]
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "EOCUBE_DEMO_ARCHIVE": str(demo_archive),
        "EOCUBE_LOCAL_WORKERS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "flows.backfill", "serve", str(store), "0 6 * * *"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                flow_run = run_deployment(
                    "update-store/incremental-update", parameters={"until": "2022-03-31", "tile_px": 100}, timeout=400
                )
                break
            except Exception as exc:  # the runner has not registered the deployment yet
                assert runner.poll() is None, runner.stderr.read()[-3000:]
                assert time.monotonic() < deadline, f"deployment never appeared: {exc}"
                time.sleep(1)
        assert flow_run.state.is_completed(), flow_run.state
    finally:
        runner.terminate()
        runner.wait(timeout=30)
    status = store_status(store)
    assert status.shape["time"] == n_before + 5 and status.committed_fraction == 1.0
    assert [r["kind"] for r in status.runs] == ["backfill", "update"]
    update = status.runs[-1]  # the late item's date inserted in order, the later ones appended
    assert (update["inserted_times"], update["appended_times"], update["late_items_for_held_dates"]) == (1, 4, 0)
    ds = open_cube(store)
    assert (np.diff(ds.time.values) > np.timedelta64(0)).all()
    assert late in json.loads(ds.attrs["eocube:source_items"])["landsat"]


def test_prefect_yaml_deployments_are_valid():
    import importlib

    from prefect.client.schemas.schedules import CronSchedule

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"incremental-update", "backfill"} <= names
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow_obj = getattr(module, func)
        flow_obj.validate_parameters(d.get("parameters", {}))  # raises on unknown or ill-typed parameters
        for s in d.get("schedules", []):
            CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC"))
        assert d["work_pool"]["name"] == "eocube-pool"
    scheduled = [d for d in spec["deployments"] if d.get("schedules")]
    assert [d["name"] for d in scheduled] == ["incremental-update"]
