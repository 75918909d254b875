"""eocube: an Earth-observation data-cube pipeline.

request -> search -> cube -> embed -> uncertainty -> compress -> store.

The public API is re-exported here and imported lazily (``import pipeline`` stays fast;
torch is loaded only when an embeddings or uncertainty name is used)::

    import pipeline as eo

    request = eo.CubeRequest(catalog="demo", bbox=(10.53, 45.515, 10.543, 45.524), start="2022-03-01",
                             end="2022-03-31", composite={"freq": "1MS"}, output="cube.zarr")
    result = eo.run_request(request)        # search -> cube -> composite -> ... -> one store
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

# jsonschema, which pystac-client's validation imports, loads the optional IRI format checker
# rfc3987_syntax whenever it is installed (JupyterLab's dependencies install it); that module builds
# some 40 Earley parsers at import, most of the start-up time of every process that touches
# a catalog (CLI runs, Dask workers). Nothing here validates "iri" formats, so it is left unloaded: those
# formats then go unchecked, as with a plain jsonschema install. An import that already happened stands.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks the import; typeshed allows modules only

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
    # the request and what runs give back
    "CubeRequest": "pipeline.model",
    "CompositeRequest": "pipeline.model",
    "EmbedRequest": "pipeline.model",
    "UncertaintyRequest": "pipeline.model",
    "CompressRequest": "pipeline.model",
    "RequestError": "pipeline.model",
    "SearchResult": "pipeline.model",
    "CubeResult": "pipeline.model",
    "ProductResult": "pipeline.model",
    "ChainResult": "pipeline.model",
    # the chain: every stage a request names
    "run_request": "pipeline.chain",
    "backfill_request": "pipeline.chain",
    "update_store": "pipeline.chain",
    "preflight": "pipeline.chain",
    "search": "pipeline.chain",
    "BackfillSpec": "pipeline.chain.slices",
    # the stages
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
    "open_cube": "pipeline.store.open",
    "embed_cube": "pipeline.embeddings.engine",
    "load_artefact": "pipeline.uncertainty.artefact",
    "compress_cube": "pipeline.compression.stage",
    "open_compressed": "pipeline.compression.stage",
    "generate_archive": "pipeline.demo",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
