"""GDAL/rasterio settings for reading COGs over HTTP(S) that survive flaky servers.

One table, :data:`REMOTE_READ_OPTIONS` (each entry may be overridden by an environment
variable of the same name, e.g. ``GDAL_HTTP_MAX_RETRY=3``), applied in three places so every reader sees it:

* odc-stac reads: :func:`configure_remote_reads` (``odc.stac.configure_rio``). odc-stac
  captures this environment when it builds the task graph and ships it inside every read
  task, so workers of any cluster (local or remote, joined before or after) read with it;
* stackstac reads: :func:`stackstac_env` (passed as its ``gdal_env``);
* our own probes of assets (:mod:`pipeline.cube.probe`): :func:`rasterio_env`.
"""

from __future__ import annotations

import os
from typing import Any

import rasterio

#: GDAL configuration for cloud reads. Retries cover HTTP 429/500/502/503/504 and
#: connection resets/timeouts (GDAL >= 3.10 retries these curl errors too).
REMOTE_READ_OPTIONS: dict[str, Any] = {
    "GDAL_HTTP_MAX_RETRY": 8,  # attempts after the first, per request
    "GDAL_HTTP_RETRY_DELAY": 0.25,  # seconds, doubled at each retry (GDAL backoff)
    "GDAL_HTTP_TIMEOUT": 60,  # seconds for one request
    "GDAL_HTTP_CONNECTTIMEOUT": 10,  # seconds to connect
    "GDAL_HTTP_MULTIRANGE": "YES",  # several tile ranges of one read fetched in parallel
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per COG open
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "CPL_VSIL_CURL_CACHE_SIZE": 200_000_000,  # bytes, /vsicurl/ block cache per process
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": 50_000_000,  # bytes per open file
    "GDAL_CACHEMAX": 256,  # MiB, raster block cache per process
    "GDAL_HTTP_VERSION": "2",  # HTTP/2 where the server offers it, else 1.1
}


def read_options(**overrides: Any) -> dict[str, Any]:
    """:data:`REMOTE_READ_OPTIONS`, then any of them set as environment variables, then ``overrides``."""
    from_env = {k: os.environ[k] for k in REMOTE_READ_OPTIONS if k in os.environ}
    return {**REMOTE_READ_OPTIONS, **from_env, **overrides}


def configure_remote_reads(**overrides: Any) -> dict[str, Any]:
    """Set the GDAL options for odc-stac reads built from now on; returns the options applied.

    Call it before building the lazy cube: the graph's read tasks carry the options to
    the workers. Safe to call more than once (the latest call wins).
    """
    import odc.stac

    options = read_options(**overrides)
    odc.stac.configure_rio(cloud_defaults=True, **options)
    return options


def rasterio_env(**overrides: Any) -> rasterio.Env:
    """A ``rasterio.Env`` with the remote-read options (for direct rasterio reads)."""
    return rasterio.Env(**read_options(**overrides))


def stackstac_env(**overrides: Any):
    """stackstac's ``gdal_env`` with the remote-read options layered on its defaults."""
    import stackstac

    return stackstac.DEFAULT_GDAL_ENV.updated(always=read_options(**overrides))
