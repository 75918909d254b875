"""Foundation-model embeddings of cubes: Presto, Galileo and Prithvi-EO-2.0 in plain torch.

>>> from pipeline.embeddings import embed_cube, write_embeddings, load_encoder
>>> emb = write_embeddings("cube.zarr", model="presto", weights="default_model.pt")  # (y, x, dim)
"""
from pipeline.embeddings.engine import embed_cube, write_embeddings
from pipeline.embeddings.galileo import Galileo, GalileoNormalizer
from pipeline.embeddings.presto import Presto, presto_normalise
from pipeline.embeddings.prithvi import PRITHVI_CONFIGS, PrithviConfig, PrithviViT
from pipeline.embeddings.registry import MODELS, EncoderInfo, load_encoder
from pipeline.embeddings.timeseries import presto_embed_timeseries
from pipeline.embeddings.weights import WeightsNotFoundError, cache_dir, resolve_weights, sha256_of

__all__ = [
    "MODELS", "PRITHVI_CONFIGS", "EncoderInfo", "Galileo", "GalileoNormalizer", "Presto", "PrithviConfig",
    "PrithviViT", "WeightsNotFoundError", "cache_dir", "embed_cube", "load_encoder", "presto_embed_timeseries",
    "presto_normalise", "resolve_weights", "sha256_of", "write_embeddings",
]
