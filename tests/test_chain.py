"""The whole chain for a request: cube, composite, embeddings, uncertainty and video in one store, on
every entry point, tile by tile, surviving faults.

The demo archive is read through a real STAC API on loopback; products are made on real Dask
schedulers (threads, and a LocalCluster of worker processes), a real artefact is trained from the
archive's labelled points, Presto runs on its released weights (where ``../shared`` has them), and a
toy encoder registered in the encoder registry stands for a model whose tasks fail.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.chain.search import search
from pipeline.chain.slices import BackfillSpec, backfill
from pipeline.demo.archive import DEMO_SITE
from pipeline.model import CubeRequest

CHUNKS = {"time": 1, "y": 32, "x": 32}
SPEC = BackfillSpec(tile_px=32, time_step=8)
PRODUCTS = ("composite", "uncertainty", "video")


def chain_request(output: Path, artefact: Path | None = None, **sections) -> CubeRequest:
    """The demo AOI, February to April 2022, Sentinel-2 + Landsat at 40 m (50 x 50 px: 4 tiles of 32 px)."""
    fields = dict(
        catalog="demo",
        bbox=DEMO_SITE.aoi_lonlat(),
        start=dt.date(2022, 2, 1),
        end=dt.date(2022, 4, 30),
        sensors=["sentinel-2", "landsat"],
        resolution=40.0,
        chunks=CHUNKS,
        output=output,
        composite={"freq": "1MS", "method": "median"},
        compress={"target_psnr": 40},
    )
    if artefact is not None:
        fields["uncertainty"] = {"model": str(artefact), "target": "vegetation_cover"}
    return CubeRequest(**{**fields, **sections})


def groups(store: Path) -> dict[str, xr.Dataset]:
    return {
        name: xr.open_zarr(store, group=name).load()
        for name in ("cube", *PRODUCTS)
        if (store / name / "zarr.json").is_file()
    }


def assert_same_products(a: Path, b: Path) -> None:
    ga, gb = groups(a), groups(b)
    assert set(ga) == set(gb)
    for name in ga:
        assert set(ga[name].data_vars) == set(gb[name].data_vars), name
        for v in ga[name].data_vars:
            np.testing.assert_array_equal(ga[name][v].values, gb[name][v].values, err_msg=f"{name}/{v}")


@pytest.fixture(scope="module")
def artefact(demo_archive: Path, tmp_path_factory) -> Path:
    """An MC-ConcTD artefact (vegetation cover, %) trained on the cube at the archive's labelled points."""
    from pipeline.uncertainty.stage import train_artefact

    work = tmp_path_factory.mktemp("artefact")
    request = chain_request(work / "train.zarr", compress=None, composite=None)
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, search(request, demo_archive), SPEC)
    points = pd.read_csv(demo_archive / "labels.csv", parse_dates=["date"])
    points = points[(points.date >= "2022-03-15") & (points.date <= "2022-04-30")]
    points.to_csv(work / "points.csv", index=False, date_format="%Y-%m-%d")
    train_artefact(
        work / "train.zarr",
        work / "points.csv",
        work / "vc.artefact",
        n_steps=3,
        method="mc-conctd",
        seed=0,
        target="target",
        name="vegetation_cover",
        units="%",
        epochs=20,
    )
    return work / "vc.artefact"


@pytest.fixture(scope="module")
def reference(demo_archive: Path, artefact: Path, tmp_path_factory) -> Path:
    """The chain run once, uninterrupted, on the threaded scheduler."""
    request = chain_request(tmp_path_factory.mktemp("ref") / "ref.zarr", artefact)
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, search(request, demo_archive), SPEC)
    return request.output


def test_every_product_is_a_group_with_provenance_and_a_stac_asset(reference: Path, artefact: Path):
    from pipeline.cube.compositing import composite
    from pipeline.store.open import open_cube
    from pipeline.uncertainty.artefact import load_artefact

    root = json.loads((reference / "zarr.json").read_text())["attributes"]
    request = json.loads(root["eocube:request"])
    assert {"composite", "uncertainty", "compress"} <= set(request) and root["eocube:version"]
    g = groups(reference)
    cube = open_cube(reference).load()
    assert set(g) == {"cube", *PRODUCTS}
    for name in PRODUCTS:
        attrs = g[name].attrs
        assert json.loads(attrs["eocube:source_items"]) == json.loads(root["eocube:source_items"]), name
        assert attrs["eocube:version"] == root["eocube:version"] and attrs["eocube:section"], name
        assert g[name]["computed"].values.all(), name
        assert json.loads(attrs["eocube:units"]) == {"computed": 4, "not_computed": 0}, name
    # the composite is the cube's composite (the per-bin statistic over the whole grid is not a tile's)
    expected = composite(cube, "1MS", "median").drop_vars("bin_valid_fraction")
    for v in expected.data_vars:
        np.testing.assert_allclose(g["composite"][v].values, expected[v].values, rtol=1e-6, err_msg=v)
    # the uncertainty maps: the artefact's, named for its target, from the cube's last three steps
    card = load_artefact(artefact).card
    assert json.loads(g["uncertainty"].attrs["eocube:artefact"])["sha256"] == card["sha256"]
    mean, sigma = g["uncertainty"]["vegetation_cover_mean"].values, g["uncertainty"]["vegetation_cover_sigma"].values
    seen = cube["valid"].isel(time=slice(-3, None)).any("time").values
    assert np.isfinite(mean[seen]).all() and np.isnan(mean[~seen]).all() and (sigma[seen] > 0).all()
    # the video copy decodes to the cube within the PSNR its QP was chosen for, in its dtype
    video = open_cube(reference / "video")
    err = np.concatenate(
        [(video[b].values - cube[b].values)[np.isfinite(cube[b].values)] for b in cube.attrs["eocube:bands"]]
    )
    peak = json.loads(g["video"].attrs["eocube:video"])["psnr_peak"]
    assert 10 * np.log10(peak**2 / np.mean(err**2)) > 38.0
    item = json.loads((reference.parent / "ref.item.json").read_text())
    assert {"data", *PRODUCTS} <= set(item["assets"])
    assert item["assets"]["uncertainty"]["eocube:group"] == "uncertainty"


def test_a_failed_read_is_masked_and_recorded_in_every_product(demo_archive: Path, artefact: Path, tmp_path: Path):
    """A COG truncated after its overviews passes the probe and fails while read (at its native 10 m): the
    run completes, and the units it touched and every product record the item."""
    from pipeline.cube.probe import probe_hrefs
    from test_cube_support import SMALL_BBOX
    from test_read_faults import truncated_copy

    request = chain_request(tmp_path / "chain.zarr", artefact, resolution=10.0, bbox=SMALL_BBOX)
    found = search(request, demo_archive)
    victim = found["sentinel-2"].items[len(found["sentinel-2"].items) // 2]
    href = victim.assets["B04"].href.removeprefix("file://")
    bad = truncated_copy(Path(href), tmp_path / "bad" / "B04.tif", keep=0.6)
    assert probe_hrefs([str(bad)]) == [None]
    victim.assets["B04"].href = bad.as_uri()
    with dask.config.set(scheduler="threads", num_workers=2):
        report = backfill(request, found, BackfillSpec(tile_px=64, time_step=8))
    assert list(report.failed_items) == [victim.id] and "pixels masked" in report.failed_items[victim.id]["B04"]
    units = [json.loads(p.read_text()) for p in (request.output / "eocube-manifest" / "units").glob("*.json")]
    touched = [u for u in units if u["failed_items"]]
    assert touched and all(list(u["failed_items"]) == [victim.id] for u in touched)
    g = groups(request.output)
    for name in PRODUCTS:
        assert victim.id in json.loads(g[name].attrs["eocube:failed_items"]), name
        assert g[name]["computed"].values.all(), name  # made, from what could be read


def test_a_video_target_out_of_reach_fails_the_run_and_commits_no_unit(demo_archive: Path, tmp_path: Path):
    """A target rate control cannot meet fails the run (it is not retried, nor recorded as a product "not
    computed"), and no unit is committed."""
    request = chain_request(tmp_path / "chain.zarr", compress={"target_bpppb": 1e-4})
    with (
        dask.config.set(scheduler="threads", num_workers=2),
        pytest.raises(ValueError, match=r"target 0.0001 bpppb is out of reach"),
    ):
        backfill(request, search(request, demo_archive), SPEC)
    assert not list((request.output / "eocube-manifest" / "units").glob("*.json"))


@pytest.mark.slow
def test_a_worker_killed_mid_chain_and_then_the_flow_process_killed_end_equal_to_an_uninterrupted_run(
    demo_archive: Path, artefact: Path, reference: Path, tmp_path: Path
):
    """SIGKILL one Dask worker while units are being made (Dask runs its tasks elsewhere), then SIGKILL the
    process running the chain once units are committed; a rerun resumes from the committed units."""
    store = tmp_path / "chain.zarr"
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_chain import chain_request, SPEC
        from pipeline.chain.search import search
        from pipeline.chain.slices import backfill
        from pipeline.cube.cluster import dask_client

        request = chain_request(Path({str(store)!r}), Path({str(artefact)!r}))
        units = request.output / "eocube-manifest" / "units"
        with dask_client(n_workers=2) as client:
            pids = sorted(client.run(os.getpid).values())
            def killer():
                while not (units.is_dir() and list(units.glob("*.json"))):
                    time.sleep(0.05)
                os.kill(pids[0], signal.SIGKILL)   # a worker, mid-chain
                print("worker killed", flush=True)
                while len(list(units.glob("*.json"))) < 2:
                    time.sleep(0.05)
                print("killing myself", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)   # the process running the chain
            threading.Thread(target=killer, daemon=True).start()
            backfill(request, search(request, Path({str(demo_archive)!r})), SPEC)
        print("finished without being killed", flush=True)
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert "worker killed" in first.stdout and first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    done = len(list((store / "eocube-manifest" / "units").glob("*.json")))
    assert 2 <= done < 4
    request = chain_request(store, artefact)
    with dask.config.set(scheduler="threads", num_workers=2):
        again = backfill(request, search(request, demo_archive), SPEC)
    assert len(again.units) == 4 - done  # only the units not committed before the kill
    assert_same_products(store, reference)


# ------------------------------------------------------------------------------------------ failing tasks


def _flaky_registry(monkeypatch, tmp_path: Path, fail: dict) -> Path:
    """Register the toy pixel encoder (tests/test_registries.py) with an adapter whose batches fail: the first
    ``fail["transient"]`` calls for the western tiles, and every call for the eastern ones while ``fail["east"]``."""
    import torch

    import test_registries as toys
    from pipeline.embeddings import registry

    class FlakyAdapter(toys.ToyAdapter):
        def embed(self, model, batch, device):
            west = float(np.nanmax(batch.lon)) < fail["lon"]
            if west and fail["transient"] > 0:
                fail["transient"] -= 1
                raise RuntimeError("CUDA error: an illegal memory access (injected, transient)")
            if not west and fail["east"]:
                raise RuntimeError("injected: this chunk's embedding always fails")
            return super().embed(model, batch, device)

    spec = toys.toy_spec("pixel")
    from dataclasses import replace

    spec = replace(spec, name="toy-flaky", aliases=(), adapter=lambda info, patch_size: FlakyAdapter("pixel", 1))
    monkeypatch.setattr(registry, "ENCODERS", dict(registry.ENCODERS))
    registry.register_encoder(spec)
    weights = tmp_path / "toy.pt"
    torch.save(toys.ToyEncoder().state_dict(), weights)
    return weights


def test_an_embedding_task_that_fails_is_retried_then_marked_not_computed_and_made_by_the_next_run(
    demo_archive: Path, tmp_path: Path, monkeypatch
):
    from pyproj import Transformer

    from pipeline.cube.grid import request_geobox

    fail = {"transient": 2, "east": True, "lon": 0.0}
    weights = _flaky_registry(monkeypatch, tmp_path, fail)
    embed = {"model": "toy-flaky", "weights": str(weights), "input": "cube", "device": "cpu"}
    request = chain_request(
        tmp_path / "chain.zarr", embed=embed, compress=None, composite=None, bands=["blue", "green", "red"]
    )
    grid = request_geobox(request)  # the longitude of the edge between the western and the eastern tiles
    edge = float(grid.coords["x"].values[SPEC.tile_px]) - abs(grid.resolution.x) / 2
    centre = float(grid.coords["y"].values.mean())
    fail["lon"] = Transformer.from_crs(grid.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(edge, centre)[0]
    found = search(request, demo_archive)
    with dask.config.set(scheduler="threads", num_workers=1):
        first = backfill(request, found, SPEC)
    assert fail["transient"] == 0  # the western tiles' failures were retried
    east = set(first.not_computed)
    assert east and all("always fails" in first.not_computed[u]["embeddings"] for u in east)
    emb = xr.open_zarr(request.output, group="embeddings").load()
    unit = json.loads((request.output / "eocube-manifest" / "units" / f"{sorted(east)[0]}.json").read_text())
    region = {"y": slice(*unit["y"]), "x": slice(*unit["x"])}
    assert not emb["computed"].isel(region).values.any()
    assert np.isnan(emb["embeddings"].isel(region).values).all()  # not zero: not computed
    assert emb["computed"].values.sum() > 0 and json.loads(emb.attrs["eocube:not_computed"]).keys() == east
    fail["east"] = False  # the fault is gone: the next run makes exactly those units
    with dask.config.set(scheduler="threads", num_workers=1):
        second = backfill(request, found, SPEC)
    assert set(second.units) == east and second.not_computed == {}
    healed = xr.open_zarr(request.output, group="embeddings").load()
    assert healed["computed"].values.all() and json.loads(healed.attrs["eocube:not_computed"]) == {}
    clean = chain_request(
        tmp_path / "clean.zarr", embed=embed, compress=None, composite=None, bands=["blue", "green", "red"]
    )
    with dask.config.set(scheduler="threads", num_workers=1):
        backfill(clean, found, SPEC)
    np.testing.assert_array_equal(
        healed["embeddings"].values, xr.open_zarr(clean.output, group="embeddings")["embeddings"].values
    )


def test_a_cluster_without_a_gpu_worker_embeds_on_its_cpu_workers(
    demo_archive: Path, shared_dir: Path, tmp_path: Path, monkeypatch, caplog
):
    from pipeline.cube.cluster import dask_client

    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(shared_dir / "models"))
    request = chain_request(
        tmp_path / "chain.zarr",
        compress=None,
        bbox=(10.530, 45.515, 10.543, 45.524),
        embed={"model": "presto", "input": "composite", "device": "cuda"},
    )
    found = search(request, demo_archive)
    with caplog.at_level(logging.INFO, logger="pipeline.chain.context"), dask_client(n_workers=2) as client:
        assert not any(w.get("resources") for w in client.scheduler_info()["workers"].values())
        report = backfill(request, found, SPEC)
    assert "embeddings run on the CPU workers: no GPU worker in the cluster" in caplog.text
    assert report.not_computed == {}
    emb = xr.open_zarr(request.output, group="embeddings")
    assert emb["computed"].values.all() and emb.attrs["model"] == "presto" and emb.sizes["dim"] == 128


def test_an_update_remakes_the_products_of_exactly_the_tiles_an_item_published_late_touches(
    demo_archive: Path, artefact: Path, reference: Path, tmp_path: Path
):
    from test_cube_support import archive_copy

    copies = {}

    def west_half_twin(collection: str, feature: dict) -> dict | None:
        day = str(feature["properties"].get("datetime"))[:10]
        if collection == "sentinel-2-l2a" and day == "2022-03-11" and "twin" not in copies:
            twin = json.loads(json.dumps(feature))
            twin["id"] = feature["id"] + "_twin"
            x0, y0, x1, y1 = feature["bbox"]
            half = (x0 + x1) / 2
            twin["bbox"] = [x0, y0, half, y1]
            twin["geometry"] = {
                "type": "Polygon",
                "coordinates": [[[x0, y0], [half, y0], [half, y1], [x0, y1], [x0, y0]]],
            }
            copies["twin"] = twin
        return feature

    archive = archive_copy(demo_archive, tmp_path / "archive", west_half_twin)
    store = tmp_path / "chain.zarr"
    request = chain_request(store, artefact)
    with dask.config.set(scheduler="threads", num_workers=2):
        backfill(request, search(request, archive), SPEC)
    before = {
        p.stem: json.loads(p.read_text())["committed"] for p in (store / "eocube-manifest" / "units").glob("*.json")
    }
    items = tmp_path / "archive" / "stac" / "sentinel-2-l2a" / "items.json"
    doc = json.loads(items.read_text())
    doc["features"].append(copies["twin"])  # published late, for a date the store holds, over its west half
    items.write_text(json.dumps(doc))
    time.sleep(1.1)  # unit records carry whole seconds
    from pipeline.chain.slices import update_request

    update = update_request(store, until=dt.date(2022, 4, 30))
    with dask.config.set(scheduler="threads", num_workers=2):
        report = backfill(update, search(update, archive), SPEC, kind="update")
    assert report.late_items_for_held_dates == 1 and report.written
    after = {
        p.stem: json.loads(p.read_text())["committed"] for p in (store / "eocube-manifest" / "units").glob("*.json")
    }
    remade = {u for u in after if after[u] != before[u]}
    assert remade == set(report.units) and remade and remade != set(after)  # the west tiles only
    assert all(json.loads((store / "eocube-manifest" / "units" / f"{u}.json").read_text())["x"][0] == 0 for u in remade)
    sources = json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["eocube:source_items"])
    assert copies["twin"]["id"] in sources["sentinel-2"]
    assert_same_products(store, reference)  # the twin repeats its original's pixels: nothing else moved


def test_run_builds_the_store_aside_and_moves_it_into_place_and_refuses_to_replace_it_unasked(
    demo_archive: Path, artefact: Path, reference: Path, tmp_path: Path
):
    from pipeline.chain.run import partial_path, run_request
    from pipeline.store.paths import OutputPathError, beside

    request = chain_request(tmp_path / "run.zarr", artefact)
    result = run_request(request, archive=demo_archive, spec=SPEC)
    assert [p.name for p in result.products] == list(PRODUCTS) and all(p.units_computed == 4 for p in result.products)
    assert not partial_path(request.output).exists() and Path(result.stac_item).is_file()
    assert_same_products(request.output, reference)
    with pytest.raises(OutputPathError, match="existing eocube store"):
        run_request(request, archive=demo_archive, spec=SPEC)
    for leftover in beside(request.output):  # as if stopped after the move, before its STAC files and quicklook
        leftover.unlink()
    again = run_request(request, archive=demo_archive, spec=SPEC)  # the same request finishes it
    assert (again.slices_written, again.units_written) == (0, 0) and all(p.is_file() for p in beside(request.output))
    assert_same_products(request.output, reference)
    with pytest.raises(OutputPathError, match="existing eocube store"):  # a backfill's store is no run to finish
        run_request(chain_request(reference, artefact), archive=demo_archive, spec=SPEC)
