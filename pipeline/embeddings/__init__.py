"""Foundation-model embeddings of cubes: Presto, Galileo and Prithvi-EO-2.0 in plain torch.

>>> from pipeline.embeddings import embed_cube, write_embeddings, load_encoder
>>> emb = write_embeddings("cube.zarr", model="presto", weights="default_model.pt")  # (y, x, dim)
"""

from pipeline._lazy import lazy_exports

_EXPORTS = {
    "embed_cube": "pipeline.embeddings.engine",
    "write_embeddings": "pipeline.embeddings.engine",
    "Galileo": "pipeline.embeddings.galileo",
    "GalileoNormalizer": "pipeline.embeddings.galileo",
    "Presto": "pipeline.embeddings.presto",
    "presto_normalise": "pipeline.embeddings.presto",
    "PRITHVI_CONFIGS": "pipeline.embeddings.prithvi",
    "PrithviConfig": "pipeline.embeddings.prithvi",
    "PrithviViT": "pipeline.embeddings.prithvi",
    "MODELS": "pipeline.embeddings.registry",
    "EncoderInfo": "pipeline.embeddings.spec",
    "EncoderSpec": "pipeline.embeddings.spec",
    "load_encoder": "pipeline.embeddings.registry",
    "register_encoder": "pipeline.embeddings.registry",
    "presto_embed_timeseries": "pipeline.embeddings.timeseries",
    "WeightsNotFoundError": "pipeline.embeddings.weights",
    "cache_dir": "pipeline.embeddings.weights",
    "resolve_weights": "pipeline.embeddings.weights",
    "sha256_of": "pipeline.embeddings.weights",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # torch loads with the first model name used
