"""Graph rewrite: make each chunk of a Dask array one task together with its private inputs.

A masked chunk needs one read per asset plus the QA decode. Left as separate tasks, the
distributed scheduler places each read next to its own (tiny) dependencies, so a chunk's
reads end up on different workers and most of the raw pixels are shipped between
processes before masking can run. :func:`fuse_private_inputs` folds every upstream task
that feeds only one output chunk into that chunk's task, so the reads, the QA decode and
the masking run in one task on one worker; shared tasks (odc-stac's per-item "open"
tasks, configuration) stay separate and are all that moves.
"""

from __future__ import annotations

import dask.array as da
from dask._task_spec import Task, convert_legacy_graph
from dask.core import flatten, reverse_dict
from dask.utils import ensure_dict


def fuse_private_inputs(array: da.Array) -> da.Array:
    """``array`` with each block's task fused with the upstream tasks that only it uses.

    Same keys, chunks, dtype and values; fewer tasks. A task used by several blocks (or by
    anything outside ``array``'s blocks) is left as it is.
    """
    graph = convert_legacy_graph(ensure_dict(array.__dask_graph__()))
    dependencies = {key: set(node.dependencies) for key, node in graph.items()}
    dependents = reverse_dict(dependencies)
    fused = dict(graph)
    for key in flatten(array.__dask_keys__()):
        group, frontier = {key}, [key]
        while frontier:
            for dep in dependencies[frontier.pop()]:
                if dep in graph and dep not in group and dependents[dep] <= group:
                    group.add(dep)
                    frontier.append(dep)
        if len(group) > 1:
            fused[key] = Task.fuse(*(graph[k] for k in group), key=key)
            for k in group - {key}:
                del fused[k]
    return da.Array(fused, array.name, array.chunks, dtype=array.dtype, meta=array._meta)
