"""One task per chunk: `fuse_private_inputs` folds a block's private upstream tasks into it,
keeps shared tasks, and leaves keys and values unchanged; the cube's reads are fused that way."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
from dask._task_spec import Task, convert_legacy_graph
from dask.utils import ensure_dict

from pipeline.cube.fusion import fuse_private_inputs
from test_cube_support import demo_found, small_request


def _graph(array: da.Array) -> dict:
    return convert_legacy_graph(ensure_dict(array.__dask_graph__()))


def test_private_inputs_are_fused_and_shared_ones_kept():
    x = da.arange(16, chunks=4).reshape(4, 4).rechunk((1, 4))
    shared = da.from_array(np.array([[10, 20, 30, 40]]), chunks=(1, 4))  # one block, used by every row
    out = (x * 2 + 1) + shared
    fused = fuse_private_inputs(out)

    graph = _graph(fused)
    keys = {k for row in fused.__dask_keys__() for k in row}
    assert keys == {k for row in out.__dask_keys__() for k in row}
    assert len(_graph(out)) > len(graph) == len(keys) + 1, "one task per block plus the shared block"
    (shared_key,) = set(graph) - keys
    assert all(shared_key in graph[k].dependencies for k in keys)
    np.testing.assert_array_equal(fused.compute(scheduler="sync"), out.compute(scheduler="sync"))
    np.testing.assert_array_equal(
        fused.compute(scheduler="sync"), np.arange(16).reshape(4, 4) * 2 + 1 + [10, 20, 30, 40]
    )


def test_a_graph_with_nothing_to_fuse_is_unchanged():
    x = da.from_array(np.arange(8), chunks=2)
    fused = fuse_private_inputs(x)
    assert set(_graph(fused)) == set(_graph(x))
    np.testing.assert_array_equal(fused.compute(scheduler="sync"), np.arange(8))


def test_cube_chunks_read_mask_and_convert_in_one_task(demo_archive: Path):
    from odc.loader._builder import _dask_loader_tyx

    from pipeline.cube import build_cube, request_geobox

    request = small_request(sensors=["sentinel-2"])
    cube = build_cube(request, demo_found(demo_archive, request), request_geobox(request), ["red", "nir08"])
    graph = convert_legacy_graph(ensure_dict(cube.__dask_graph__()))
    readers = [k for k, node in graph.items() if isinstance(node, Task) and node.func is _dask_loader_tyx]
    assert readers == [], "no odc-stac read is left as a task of its own"
    with dask.config.set(scheduler="threads"):
        assert 0 < float(cube["valid"].mean()) < 1
