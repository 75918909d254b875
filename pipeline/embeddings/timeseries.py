"""Presto embeddings of pixel time series given as plain arrays (e.g. the fuel-moisture samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.embeddings.presto import DW_MISSING, PRESTO_BANDS, PRESTO_RAW_BANDS, presto_normalise, run_presto
from pipeline.embeddings.registry import default_device, load_encoder


def presto_embed_timeseries(
    x: np.ndarray,
    months: np.ndarray,
    latlon: np.ndarray,
    mask: np.ndarray | None = None,
    dynamic_world: np.ndarray | None = None,
    weights: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Pooled Presto embeddings ``[n, 128]`` (float32) of ``n`` pixel time series.

    ``x``: ``[n, t, 18]`` raw values in :data:`PRESTO_RAW_BANDS` order and units (S1 dB, S2 DN,
    K, m, m, degrees, NDVI; the authors' S1_S2_ERA5_SRTM layout, t <= 24), normalised here with
    :func:`presto_normalise`. ``months``: ``[n, t]`` or ``[t]`` (0 = January). ``latlon``: ``[n, 2]``
    degrees. ``mask``: optional ``[n, t, 17]`` (encoder band order) or ``[n, t, 18]``, 1 = missing.
    ``dynamic_world``: optional ``[n, t]`` classes 0..8 (default: 9 = missing, masked).
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != len(PRESTO_RAW_BANDS):
        raise ValueError(f"x must be [n, t, {len(PRESTO_RAW_BANDS)}] ({PRESTO_RAW_BANDS}); got {x.shape}")
    n, t, _ = x.shape
    if np.asarray(latlon).shape != (n, 2):
        raise ValueError(f"latlon must be [n, 2] = ({n}, 2); got {np.asarray(latlon).shape}")
    norm = presto_normalise(x)
    if mask is not None:
        mask = np.asarray(mask, np.float32)
        if mask.shape[-1] == len(PRESTO_RAW_BANDS):
            mask = mask[..., [i for i, b in enumerate(PRESTO_RAW_BANDS) if b != "B9"]]
        if mask.shape != (n, t, len(PRESTO_BANDS)):
            raise ValueError(f"mask must be [n, t, 17] or [n, t, 18]; got {mask.shape}")
    months = np.broadcast_to(np.asarray(months, np.int64), (n, t))
    dw = np.full((n, t), DW_MISSING) if dynamic_world is None else np.asarray(dynamic_world, np.int64)
    dev = default_device() if device is None else torch.device(device)
    model, _ = load_encoder("presto", weights, dev)
    return run_presto(model, norm, mask, dw, months, np.asarray(latlon, np.float32), dev, batch_size)
