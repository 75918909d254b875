"""eocube: an Earth-observation data-cube pipeline.

request -> search -> cube -> embed -> uncertainty -> compress -> store.

The public API is re-exported here and imported lazily (``import pipeline`` stays fast;
torch is loaded only when an embeddings or uncertainty name is used)::

    from pipeline import CubeRequest, run_request, decode_qa, invalid_mask
"""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

# jsonschema, which pystac-client's validation imports, loads the optional IRI format checker
# rfc3987_syntax whenever it is installed (JupyterLab's dependencies install it); that module builds
# some 40 Earley parsers at import, most of the start-up time of every process that touches
# a catalog (CLI runs, Dask workers). Nothing here validates "iri" formats, so it is left unloaded: those
# formats then go unchecked, as with a plain jsonschema install. An import that already happened stands.
sys.modules.setdefault("rfc3987_syntax", None)

from pipeline._lazy import lazy_exports  # noqa: E402
from pipeline.redaction import install_redaction  # noqa: E402

# Signed asset URLs and tokens must never reach a log, a warning or a traceback, in whichever
# process runs pipeline code: the CLI, a notebook, a Prefect flow or a Dask worker (which
# imports this package to unpickle its first pipeline task).
install_redaction()

try:
    __version__ = version("eocube")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

#: public name -> module that defines it
_EXPORTS = {
    "CubeRequest": "pipeline.model",
    "RequestError": "pipeline.model",
    "CatalogConfig": "pipeline.catalog",
    "CatalogError": "pipeline.catalog",
    "EmptySearchError": "pipeline.catalog",
    "load_catalog": "pipeline.catalog",
    "search_items": "pipeline.catalog",
    "serve_archive": "pipeline.catalog",
    "SensorProfile": "pipeline.sensors",
    "MaskPolicy": "pipeline.sensors",
    "decode_qa": "pipeline.sensors",
    "invalid_mask": "pipeline.sensors",
    "load_profile": "pipeline.sensors",
    "profile_for_collection": "pipeline.sensors",
    "build_cube": "pipeline.cube",
    "request_geobox": "pipeline.cube",
    "dask_client": "pipeline.cube",
    "write_store": "pipeline.store",
    "generate_archive": "pipeline.demo",
    "run_request": "pipeline.chain",
    "backfill_request": "pipeline.chain",
    "update_store": "pipeline.chain",
    "preflight": "pipeline.chain",
    "search": "pipeline.chain",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
