"""One bad asset never sinks a run, and signed catalogs are read signed on every path.

A COG truncated after its overviews passes the probe and fails while the cube is read: the
run completes, the item's pixels in the affected chunks are masked (never wrong), the item,
asset and reason are recorded in the store and shown by the summary and ``eocube status``;
more failures than ``max_failed_fraction`` fail the run in one line and leave no store.

Signed reads: a loopback Planetary-Computer look-alike (a token endpoint issuing tokens that
live about a second, and a blob storage that refuses missing, expired and revoked ones, reached
by GDAL as an HTTP proxy) serves the demo archive; a backfill slower than a token's life, with
a key rotation in the middle, completes with data equal to reading the files from disk.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml

from faults import RangeServer, TokenAuthority, blob_href
from pipeline.store.open import open_cube
from test_cube_support import archive_copy, demo_found, small_request

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

CHUNKS = {"time": 1, "y": 32, "x": 32}


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """The first ``keep`` share of the bytes of ``src``: header and overviews intact, full-resolution tiles cut."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _path(href: str) -> Path:
    return Path(href.removeprefix("file://"))


def _step(ds: xr.Dataset, item) -> int:
    return int(np.argmin(abs(ds.time.values - np.datetime64(item.properties["datetime"].rstrip("Z"), "ns"))))


def clearest(items: list, reference: xr.Dataset):
    """The item whose date has the most valid pixels in ``reference``."""
    return max(items, key=lambda i: float(reference["valid"].isel(time=_step(reference, i)).mean()))


@pytest.fixture(scope="module")
def references(demo_archive: Path, tmp_path_factory):
    """The small request's cube read from intact files, by reader engine (the engines resample a little differently)."""
    from pipeline.chain.run import assemble_and_write

    cache: dict[str, xr.Dataset] = {}

    def reference(engine: str = "odc-stac") -> xr.Dataset:
        if engine not in cache:
            request = small_request(
                output=tmp_path_factory.mktemp("ref") / "ref.zarr", resolution=10.0, chunks=CHUNKS, engine=engine
            )
            with dask.config.set(scheduler="threads", num_workers=2):
                cache[engine] = open_cube(assemble_and_write(request, demo_found(demo_archive, request))).load()
        return cache[engine]

    return reference


@pytest.mark.parametrize("engine", ["odc-stac", "stackstac"])
def test_a_cog_truncated_after_its_overviews_is_masked_where_it_fails_and_recorded(
    demo_archive: Path, references, tmp_path: Path, engine: str
):
    from pipeline.chain.run import assemble_and_write
    from pipeline.cube.probe import probe_hrefs

    reference = references(engine)
    request = small_request(output=tmp_path / "cube.zarr", resolution=10.0, chunks=CHUNKS, engine=engine)
    found = demo_found(demo_archive, request)
    victim = clearest(found["sentinel-2"].items, reference)
    bad = truncated_copy(_path(victim.assets["B04"].href), tmp_path / "bad" / "B04.tif")
    assert probe_hrefs([str(bad)]) == [None]  # the probe cannot see it: only the overview is decoded
    victim.assets["B04"].href = str(bad)
    with dask.config.set(scheduler="threads", num_workers=2):
        store = assemble_and_write(request, found)
    ds = open_cube(store).load()
    failed = json.loads(ds.attrs["eocube:failed_items"])
    assert list(failed) == [victim.id] and list(failed[victim.id]) == ["B04"]
    assert "RasterioIOError" in failed[victim.id]["B04"] and "pixels masked" in failed[victim.id]["B04"]
    assert victim.id in json.loads(ds.attrs["eocube:source_items"])["sentinel-2"]  # its other chunks are in the store
    t = _step(ds, victim)
    for name in ("red", "nir08", "valid"):
        others = [i for i in range(ds.sizes["time"]) if i != t]
        np.testing.assert_array_equal(ds[name].isel(time=others).values, reference[name].isel(time=others).values)
    lost = reference["valid"].isel(time=t).values & ~ds["valid"].isel(time=t).values
    gained = ~reference["valid"].isel(time=t).values & ds["valid"].isel(time=t).values
    assert lost.any() and not gained.any()  # masked where the read failed, nothing made up
    kept = ds["valid"].isel(time=t).values
    np.testing.assert_array_equal(ds["red"].isel(time=t).values[kept], reference["red"].isel(time=t).values[kept])


def test_more_failures_than_allowed_fail_in_one_line_and_leave_no_store(demo_archive: Path, tmp_path: Path):
    from pipeline.chain.run import assemble_and_write
    from pipeline.cube.assemble import TooManyFailuresError

    request = small_request(output=tmp_path / "cube.zarr", resolution=10.0, chunks=CHUNKS, max_failed_fraction=0.1)
    found = demo_found(demo_archive, request)
    victims = found["sentinel-2"].items[1:3]
    for i, item in enumerate(victims):
        item.assets["B8A"].href = str(truncated_copy(_path(item.assets["B8A"].href), tmp_path / f"bad{i}" / "B8A.tif"))
    with dask.config.set(scheduler="threads", num_workers=2), pytest.raises(TooManyFailuresError) as err:
        assemble_and_write(request, found)
    message = str(err.value)
    assert "\n" not in message and "2 of 10 items" in message and "max_failed_fraction 0.1" in message
    assert all(v.id in message for v in victims)
    assert not request.output.exists() and not list(tmp_path.glob(".cube.zarr.partial-*"))


def test_the_cli_completes_and_shows_failed_items_in_its_summary_and_in_status(demo_archive: Path, tmp_path: Path):
    items = {}

    def truncate_one(collection: str, feature: dict) -> dict:
        if collection == "sentinel-2-l2a" and feature["properties"]["datetime"].startswith("2022-03-11"):
            asset = feature["assets"]["B03"]
            asset["href"] = str(truncated_copy(_path(asset["href"]), tmp_path / "bad" / "B03.tif"))
            items["victim"] = feature["id"]
        return feature

    archive = archive_copy(demo_archive, tmp_path / "archive", truncate_one)
    request = tmp_path / "request.yaml"
    request.write_text(
        yaml.safe_dump(
            {
                "catalog": "demo",
                "bbox": [10.530, 45.515, 10.543, 45.524],
                "start": "2022-03-01",
                "end": "2022-03-31",
                "sensors": ["sentinel-2", "landsat"],
                "resolution": 10,
                "chunks": CHUNKS,
                "output": str(tmp_path / "cube.zarr"),
            }
        )
    )
    env = {"EOCUBE_DEMO_ARCHIVE": str(archive), "EOCUBE_LOCAL_WORKERS": "2", "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(request)],
        capture_output=True,
        text=True,
        env={**_env(), **env},
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "failed items" in run.stdout and items["victim"] in run.stdout
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(tmp_path / "cube.zarr")],
        capture_output=True,
        text=True,
        env={**_env(), **env},
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "100% committed" in status.stdout and items["victim"] in status.stdout and "B03" in status.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(tmp_path / "cube.zarr"), "--json"],
        capture_output=True,
        text=True,
        env={**_env(), **env},
        timeout=120,
    )
    assert list(json.loads(as_json.stdout)["failed_items"]) == [items["victim"]]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GDAL_HTTP_PROXY"))}


# ----------------------------------------------------------------------------- signed catalogs


def _signed_archive(demo_archive: Path, tmp_path: Path, server: RangeServer) -> Path:
    """The demo archive as Planetary Computer would list it: blob hrefs, signed with tokens of ``server``."""

    def to_blob(collection: str, feature: dict) -> dict:
        for asset in feature["assets"].values():
            if asset["href"].startswith("file://"):
                asset["href"] = blob_href(demo_archive, asset["href"])
        return feature

    return archive_copy(
        demo_archive,
        tmp_path / "pc-archive",
        to_blob,
        catalog={"name": "pc-lookalike", "signing": "planetary-computer", "signing_url": server.token_url},
    )


@pytest.mark.slow
def test_a_backfill_of_a_signed_catalog_outlives_its_tokens_and_a_key_rotation(
    demo_archive: Path, tmp_path: Path, monkeypatch, prefect_harness
):
    from flows.backfill import backfill_flow
    from pipeline.chain.run import assemble_and_write
    from pipeline.chain.search import search
    from pipeline.model import CubeRequest

    authority = TokenAuthority(lifetime_s=1.5)
    with RangeServer(demo_archive, authority=authority) as server:
        archive = _signed_archive(demo_archive, tmp_path, server)
        monkeypatch.setenv("GDAL_HTTP_PROXY", server.proxy)  # GDAL reaches the "blob storage" through the server
        monkeypatch.setenv("EOCUBE_LOCAL_WORKERS", "2")
        fields = dict(
            catalog=str(archive / "catalog.yaml"),
            bbox=(10.530, 45.515, 10.543, 45.524),
            start="2022-03-01",
            end="2022-03-31",
            sensors=["sentinel-2", "landsat"],
            resolution=10.0,
            chunks=CHUNKS,
            max_failed_fraction=0.0,
        )
        rotated = threading.Event()

        def rotate_keys_mid_run() -> None:  # tokens die before their time: only a 403 says so
            while authority.counts["issued"] < 3:
                threading.Event().wait(0.05)
            authority.revoke()
            rotated.set()

        threading.Thread(target=rotate_keys_mid_run, daemon=True).start()
        report = backfill_flow(
            CubeRequest(**fields, output=tmp_path / "backfill.zarr"), tile_px=32, time_step=2, archive=archive
        )
        assert rotated.is_set()
        request = CubeRequest(**fields, output=tmp_path / "run.zarr")
        with dask.config.set(scheduler="threads", num_workers=2):
            run = open_cube(assemble_and_write(request, search(request, archive))).load()
    assert authority.counts["issued"] >= 4, authority.counts  # more tokens than one backfill-long token
    assert authority.counts["refused_missing"] == 0  # every read was signed, probes and backfill slices included
    assert authority.counts["refused_revoked"] >= 1  # ... and a refused token was replaced, not given up on
    assert len(report["written"]) == report["planned"] > 1
    backfilled = open_cube(tmp_path / "backfill.zarr").load()
    assert json.loads(backfilled.attrs.get("eocube:failed_items", "{}")) == {}
    local = small_request(output=tmp_path / "disk.zarr", resolution=10.0, chunks=CHUNKS)
    from pipeline.chain.run import assemble_and_write as write_local

    with dask.config.set(scheduler="threads", num_workers=2):
        disk = open_cube(write_local(local, demo_found(demo_archive, local))).load()
    for ds in (backfilled, run):
        for name in ("red", "nir08", "valid"):
            np.testing.assert_array_equal(ds[name].values, disk[name].values, err_msg=name)


def test_tokens_are_fetched_again_before_they_expire_and_after_a_403(tmp_path: Path, demo_archive: Path):
    import time

    from pipeline.catalog.signing import PlanetaryComputerSigner
    from pipeline.cube.reads import read_with_signing

    authority = TokenAuthority(lifetime_s=0.8)
    with RangeServer(demo_archive, authority=authority) as server:
        signer = PlanetaryComputerSigner(server.token_url)
        href = "https://eocubetest.blob.core.windows.net/archive/x.tif"
        first = signer.sign(href)
        assert signer.sign(href) == first and authority.counts["issued"] == 1  # cached while fresh
        time.sleep(0.7)  # within a quarter of its life of expiring
        assert signer.sign(href) != first and authority.counts["issued"] == 2
        calls: list[str] = []

        def read(signed: str) -> str:
            calls.append(signed)
            if len(calls) == 1:
                raise OSError("HTTP response code: 403")
            return signed

        assert read_with_signing(signer, href, read) == calls[-1] and calls[0] != calls[1]
        assert authority.counts["issued"] == 3
    assert "sig=" not in repr(signer) and shutil.which("true")


@contextlib.contextmanager
def scheduler(kind: str):
    """The threaded scheduler (slices written two at a time), or a Dask cluster (a Zarr store's slices as one
    computation): either way, slices computed together, whose failed reads must not be mixed up."""
    if kind == "threads":
        with dask.config.set(scheduler="threads", num_workers=2):
            yield
        return
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster):
            yield


@pytest.mark.parametrize("kind", ["threads", "distributed"])
def test_a_backfill_masks_and_records_a_failed_read_and_reads_it_again_next_run(
    demo_archive: Path, references, tmp_path: Path, kind: str
):
    from pipeline.chain.slices import BackfillSpec, backfill
    from pipeline.store.status import store_status

    reference = references("odc-stac")
    request = small_request(output=tmp_path / "bf.zarr", resolution=10.0, chunks=CHUNKS)
    found = demo_found(demo_archive, request)
    victim = clearest(found["sentinel-2"].items, reference)
    good = victim.assets["B04"].href
    victim.assets["B04"].href = str(truncated_copy(_path(good), tmp_path / "bad" / "B04.tif"))
    spec = BackfillSpec(engine="zarr", tile_px=64, time_step=2)
    with scheduler(kind):
        first = backfill(request, found, spec)
    assert list(first.failed_items) == [victim.id] and "B04" in first.failed_items[victim.id]
    status = store_status(request.output)
    assert list(status.failed_items) == [victim.id]
    damaged = [r["slice"] for r in status.committed if r.get("failed")]
    assert damaged and len(damaged) < len(status.committed)
    ds = open_cube(request.output).load()
    t = _step(ds, victim)
    spans = [r["t"] for r in status.committed if r.get("failed")]
    assert all(start <= t < stop for start, stop in spans), "only the slices holding its date list the failure"
    assert not (~reference["valid"].isel(time=t).values & ds["valid"].isel(time=t).values).any()
    victim.assets["B04"].href = good  # the storage recovers: the next run reads the damaged slices again
    with scheduler(kind):
        second = backfill(request, found, spec)
    assert sorted(second.written) == sorted(damaged) and second.failed_items == {}
    healed = open_cube(request.output).load()
    for name in ("red", "nir08", "valid"):
        np.testing.assert_array_equal(healed[name].values, reference[name].values, err_msg=name)
    assert json.loads(healed.attrs["eocube:failed_items"]) == {}
