"""Remote reads that survive: the demo COGs served over HTTP on loopback by a small threaded
server that honours Range requests and, by a seeded schedule, fails, resets or delays a
share of them. The cube read through it must equal the cube read from disk; a COG that
stays broken is named (item and asset), left out, and recorded in the store."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import xarray as xr

from faults import FaultPlan, RangeServer
from pipeline.cube.probe import UnreadableAssetWarning
from test_cube_support import demo_found, small_request, with_hrefs

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.data_vars) == list(b.data_vars)
    np.testing.assert_array_equal(a.time.values, b.time.values)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)  # NaNs compare equal here


def test_flaky_http_reads_equal_disk_reads(demo_archive: Path):
    from pipeline.cube.assemble import build_cube
    from pipeline.cube.grid import request_geobox

    request = small_request(sensors=["sentinel-2", "landsat"])
    found = demo_found(demo_archive, request)
    geobox = request_geobox(request)
    bands = ["red", "nir08"]
    disk = build_cube(request, found, geobox, bands).compute(scheduler="threads")
    faults = FaultPlan(error_share=0.2, drop_share=0.15, slow_share=0.15, slow_seconds=0.3, seed=7)
    with RangeServer(demo_archive, faults) as server:
        remote = build_cube(request, found, geobox, bands, sign=server.patch_url).compute(scheduler="threads")
    print("\nrange requests:", faults.counts)
    assert min(faults.counts[k] for k in ("error", "drop", "slow")) >= 3
    assert json.loads(remote.attrs["eocube:failed_items"]) == {}
    assert remote.sizes["time"] >= 4 and float(remote["valid"].mean()) > 0.2
    _assert_same(disk, remote)


def test_a_cog_that_stays_broken_is_named_left_out_and_recorded(demo_archive: Path, tmp_path: Path, monkeypatch):
    from pipeline.chain.run import assemble_and_write

    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "4")  # give up on the broken COG in ~1.5 s, not ~1 min
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")

    request = small_request(output=tmp_path / "cube.zarr")
    found = demo_found(demo_archive, request)
    victim = found["sentinel-2"].items[1]
    faults = FaultPlan(error_share=0.05, seed=7)
    with RangeServer(demo_archive, faults) as server:
        remote = with_hrefs(found, server.patch_url)
        faults.broken.add(urlparse(server.patch_url(victim.assets["B04"].href)).path)
        with pytest.warns(
            UnreadableAssetWarning, match=rf"item {victim.id} asset B04 \(http://127.0.0.1:\d+/.*/B04.tif\)"
        ):
            store = assemble_and_write(request, remote)
    assert faults.counts["broken"] >= 1
    ds = xr.open_zarr(store)
    failed = json.loads(ds.attrs["eocube:failed_items"])
    assert list(failed) == [victim.id] and list(failed[victim.id]) == ["B04"]
    assert "500" in failed[victim.id]["B04"]
    sources = json.loads(ds.attrs["eocube:source_items"])
    assert victim.id not in sources["sentinel-2"]
    assert len(sources["sentinel-2"]) == len(found["sentinel-2"].items) - 1
    assert len(sources["landsat"]) == len(found["landsat"].items)
    assert ds.sizes["time"] == len(sources["sentinel-2"]) + len(sources["landsat"])
    assert float(ds["valid"].mean()) > 0.2
