"""Cube assembly: the request grid, per-sensor masked loading, multi-sensor stacking, Dask clusters."""
from pipeline.cube.assemble import build_cube, cube_bands
from pipeline.cube.cluster import dask_client
from pipeline.cube.grid import request_geobox
from pipeline.cube.load import load_sensor

__all__ = ["build_cube", "cube_bands", "dask_client", "load_sensor", "request_geobox"]
