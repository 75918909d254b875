"""Cube assembly: the request grid, per-sensor masked loading (odc-stac or stackstac),
multi-sensor stacking, temporal composites, remote-read settings, Dask clusters."""

from pipeline.cube.assemble import build_cube, cube_bands
from pipeline.cube.cluster import dask_client
from pipeline.cube.compositing import composite
from pipeline.cube.gdal_env import configure_remote_reads
from pipeline.cube.grid import request_geobox
from pipeline.cube.load import load_sensor

__all__ = [
    "build_cube",
    "composite",
    "configure_remote_reads",
    "cube_bands",
    "dask_client",
    "load_sensor",
    "request_geobox",
]
