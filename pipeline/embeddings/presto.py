"""Presto encoder (Tseng et al. 2023, arXiv 2304.14065) in plain torch.

Pixel time-series model: inputs ``x [B, T, 17]`` (normalised bands, order :data:`PRESTO_BANDS`),
``dynamic_world [B, T]`` (class 0..8, 9 = missing), ``latlons [B, 2]`` (degrees), optional
``mask [B, T, 17]`` (1 = missing) and ``month`` (0 = January; int, ``[B]`` start month or ``[B, T]``).
Loads the released ``default_model.pt`` (encoder + decoder state dict) with ``strict=True`` on the
encoder part. The normalisation of raw values is :func:`presto_normalise`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.embeddings.chips import (
    CUBE_TO_S2,
    ChipBatch,
    autocast,
    latlon_to_cartesian,
    ndvi,
    s2_reflectance,
    to_device,
)
from pipeline.embeddings.layers import Block, drop_masked_tokens, month_table
from pipeline.embeddings.spec import BuiltEncoder, EncoderInfo, EncoderSpec, fixed_chip
from pipeline.embeddings.weights import WeightsSource

#: Encoder input band order (17 channels).
PRESTO_BANDS: tuple[str, ...] = (
    "VV",
    "VH",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8A",
    "B11",
    "B12",
    "temperature_2m",
    "total_precipitation",
    "elevation",
    "slope",
    "NDVI",
)
#: Raw band order of the authors' S1_S2_ERA5_SRTM pipeline (18 channels, incl. B9).
PRESTO_RAW_BANDS: tuple[str, ...] = (
    "VV",
    "VH",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8A",
    "B9",
    "B11",
    "B12",
    "temperature_2m",
    "total_precipitation",
    "elevation",
    "slope",
    "NDVI",
)
#: Band groups -> channel indices into PRESTO_BANDS; dict order = token order = channel-embedding id.
BAND_GROUPS: dict[str, list[int]] = {
    "S1": [0, 1],
    "S2_RGB": [2, 3, 4],
    "S2_Red_Edge": [5, 6, 7],
    "S2_NIR_10m": [8],
    "S2_NIR_20m": [9],
    "S2_SWIR": [10, 11],
    "ERA5": [12, 13],
    "SRTM": [14, 15],
    "NDVI": [16],
}
DW_MISSING = 9  #: Dynamic World "no data" class (its token is masked)

# (x + ADD_BY) / DIVIDE_BY per raw band (presto/dataops/pipelines/s1_s2_era5_srtm.py).
_ADD_BY = {"VV": 25.0, "VH": 25.0, "temperature_2m": -272.15}
_DIVIDE_BY = {
    "VV": 25.0,
    "VH": 25.0,
    "temperature_2m": 35.0,
    "total_precipitation": 0.03,
    "elevation": 2000.0,
    "slope": 50.0,
    "NDVI": 1.0,
}
_S2_DIVIDE = 1e4


def presto_normalise(raw: np.ndarray) -> np.ndarray:
    """Normalise raw ``[..., 18]`` values (order :data:`PRESTO_RAW_BANDS`) to the encoder's ``[..., 17]``.

    Units of ``raw``: S1 in dB, S2 as DN (reflectance × 1e4), temperature in K, precipitation in m,
    elevation in m, slope in degrees. Computes ``(x + add) / div`` in float64, casts to float32,
    drops B9 and recomputes NDVI from the normalised B8 and B4 (0 where B8 + B4 <= 0), exactly as
    the authors' ``S1_S2_ERA5_SRTM.normalize``.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[-1] != len(PRESTO_RAW_BANDS):
        raise ValueError(f"expected {len(PRESTO_RAW_BANDS)} raw bands {PRESTO_RAW_BANDS}, got shape {raw.shape}")
    add = np.array([_ADD_BY.get(b, 0.0) for b in PRESTO_RAW_BANDS])
    div = np.array([_DIVIDE_BY.get(b, _S2_DIVIDE) for b in PRESTO_RAW_BANDS])
    norm = ((raw + add) / div).astype(np.float32)
    keep = [i for i, b in enumerate(PRESTO_RAW_BANDS) if b != "B9"]
    out = norm[..., keep]
    b8, b4 = out[..., PRESTO_BANDS.index("B8")], out[..., PRESTO_BANDS.index("B4")]
    total = b8 + b4
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(total > 0, (b8 - b4) / np.where(total > 0, total, 1), 0).astype(np.float32)
    out[..., PRESTO_BANDS.index("NDVI")] = ndvi
    return out


def expand_months(month: int | torch.Tensor, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Month input -> ``[B, T]`` int64. An int or ``[B]`` start month expands as ``(m + t) mod 12``."""
    if isinstance(month, int):
        month = torch.full((batch,), month, dtype=torch.long, device=device)
    month = month.to(device=device, dtype=torch.long)
    if month.dim() == 1:
        return (month[:, None] + torch.arange(steps, device=device)[None]) % 12
    if month.shape != (batch, steps):
        raise ValueError(f"month must be an int, [B] or [B, T]=({batch}, {steps}); got {tuple(month.shape)}")
    return month


class Presto(nn.Module):
    """The Presto encoder (default config: 128-d, 2 blocks, 8 heads, MLP ratio 4)."""

    def __init__(
        self,
        embedding_size: int = 128,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        channel_embed_ratio: float = 0.25,
        month_embed_ratio: float = 0.25,
        max_sequence_length: int = 24,
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.eo_patch_embed = nn.ModuleDict({g: nn.Linear(len(i), embedding_size) for g, i in BAND_GROUPS.items()})
        self.dw_embed = nn.Embedding(DW_MISSING + 1, embedding_size)
        self.latlon_embed = nn.Linear(3, embedding_size)
        self.blocks = nn.ModuleList([Block(embedding_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embedding_size)
        channel_dim = int(embedding_size * channel_embed_ratio)
        month_dim = int(embedding_size * month_embed_ratio)
        pos_dim = embedding_size - channel_dim - month_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, max_sequence_length, pos_dim), requires_grad=False)
        self.month_embed = nn.Embedding.from_pretrained(month_table(month_dim), freeze=True)
        self.channel_embed = nn.Embedding(len(BAND_GROUPS) + 1, channel_dim)

    def tokens(
        self,
        x: torch.Tensor,
        dynamic_world: torch.Tensor,
        latlons: torch.Tensor,
        mask: torch.Tensor | None = None,
        month: int | torch.Tensor = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed and encode. Returns ``(tokens [B, L, D]`` pre-final-norm, ``padded [B, L]`` bool,
        ``order [B, 9T+1]`` token indices) with the latlon token at index 0."""
        b, t, c = x.shape
        if c != len(PRESTO_BANDS):
            raise ValueError(f"Presto expects x [B, T, {len(PRESTO_BANDS)}] ({PRESTO_BANDS}); got {tuple(x.shape)}")
        if t > self.pos_embed.shape[1]:
            raise ValueError(f"Presto supports at most {self.pos_embed.shape[1]} time steps, got {t}")
        if mask is None:
            mask = torch.zeros_like(x)
        months = self.month_embed(expand_months(month, b, t, x.device))
        pos = self.pos_embed[:, :t].expand(b, -1, -1)
        all_tokens, all_masks = [], []
        for gid, (group, idx) in enumerate(BAND_GROUPS.items()):
            tok = self.eo_patch_embed[group](x[:, :, idx])
            chan = self.channel_embed.weight[gid].expand(b, t, -1)
            if group == "SRTM":  # one static token from t = 0, no month / position
                enc = torch.cat([torch.zeros_like(months[:, :1]), chan[:, :1], torch.zeros_like(pos[:, :1])], -1)
                steps = slice(0, 1)
            else:
                enc = torch.cat([months, chan, pos], -1)
                steps = slice(None)
            all_tokens.append(tok[:, steps] + enc)
            all_masks.append(mask[:, steps][:, :, idx].max(dim=-1).values > 0)
        chan = self.channel_embed.weight[len(BAND_GROUPS)].expand(b, t, -1)
        all_tokens.append(self.dw_embed(dynamic_world) + torch.cat([months, chan, pos], -1))
        all_masks.append(dynamic_world == DW_MISSING)
        tokens, order, padded = drop_masked_tokens(torch.cat(all_tokens, 1), torch.cat(all_masks, 1))
        latlon = self.latlon_embed(latlon_to_cartesian(latlons)).unsqueeze(1)
        tokens = torch.cat([latlon, tokens], 1)
        padded = torch.cat([torch.zeros_like(padded[:, :1]), padded], 1)
        order = torch.cat([torch.zeros_like(order[:, :1]), order + 1], 1)
        for blk in self.blocks:
            tokens = blk(tokens, key_keep=~padded)
        return tokens, padded, order

    def forward(
        self,
        x: torch.Tensor,
        dynamic_world: torch.Tensor,
        latlons: torch.Tensor,
        mask: torch.Tensor | None = None,
        month: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """Pooled embedding ``[B, D]``: LayerNorm of the mean over kept tokens (incl. latlon)."""
        tokens, padded, _ = self.tokens(x, dynamic_world, latlons, mask, month)
        keep = (~padded).to(tokens.dtype)
        mean = (tokens * keep.unsqueeze(-1)).sum(1) / keep.sum(-1, keepdim=True)
        return self.norm(mean)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> Presto:
        """Build from the released Presto checkpoint (``encoder.*`` + ``decoder.*``), strict on the encoder."""
        enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        if not enc:
            raise ValueError("not a Presto checkpoint: no 'encoder.*' keys")
        model = cls()
        model.load_state_dict(enc, strict=True)
        return model.eval()


# ------------------------------------------------------------------------------------- cube adapter
def presto_arrays(s2: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """S2 reflectance ``{B2..B12: [N, T]}`` -> Presto ``x [N, T, 17]`` and ``mask [N, T, 17]`` (1 = missing).

    S1, ERA5 and SRTM have no cube source and are masked; NDVI comes from the normalised B8, B4.
    """
    n, t = next(iter(s2.values())).shape
    x = np.zeros((n, t, len(PRESTO_BANDS)), np.float32)
    mask = np.ones_like(x)
    for name, values in s2.items():
        i = PRESTO_BANDS.index(name)
        ok = np.isfinite(values)
        x[..., i] = np.where(ok, values, 0)  # S2 DN / 1e4 == reflectance
        mask[..., i] = ~ok
    b8, b4 = PRESTO_BANDS.index("B8"), PRESTO_BANDS.index("B4")
    i_ndvi = PRESTO_BANDS.index("NDVI")
    x[..., i_ndvi] = ndvi(x[..., b8], x[..., b4])
    mask[..., i_ndvi] = np.maximum(mask[..., b8], mask[..., b4])
    return x, mask


def run_presto(
    model: nn.Module,
    x: np.ndarray,
    mask: np.ndarray | None,
    dynamic_world: np.ndarray,
    months: np.ndarray,
    latlons: np.ndarray,
    device: torch.device,
    batch_size: int = 4096,
) -> np.ndarray:
    """Pooled Presto embeddings ``[N, 128]`` for normalised inputs, in batches of ``batch_size`` pixels."""
    if x.shape[1] > 24:
        raise ValueError(f"Presto takes at most 24 time steps; got {x.shape[1]} (select or composite steps first)")
    out = []
    with torch.inference_mode(), autocast(device):
        for s in range(0, x.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            emb = model(
                to_device(x[sl], device),
                to_device(dynamic_world[sl].astype(np.int64), device),
                to_device(latlons[sl].astype(np.float32), device),
                None if mask is None else to_device(mask[sl].astype(np.float32), device),
                to_device(months[sl].astype(np.int64), device),
            )
            out.append(emb.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


class PrestoAdapter:
    """Per-pixel Presto embeddings; the pooled token mean (the authors' ``eval_task``) per pixel.

    Normalisation: ``(x + add) / div`` of ``presto/dataops/pipelines/s1_s2_era5_srtm.py`` (S2: DN / 1e4,
    i.e. reflectance in [0, 1]); NDVI recomputed from the normalised B8 and B4.
    """

    kind, unit = "pixel", 1
    pooling = "mean over unmasked tokens incl. latlon, then LayerNorm (Presto eval_task); per pixel"

    def __init__(self, pixel_batch: int = 4096) -> None:
        self.pixel_batch = pixel_batch

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        b, t, h, w = batch.shape
        s2 = {k: v.transpose(0, 2, 3, 1).reshape(-1, t) for k, v in s2_reflectance(batch.bands).items()}
        if not s2:
            raise ValueError(
                f"Presto needs Sentinel-2-like bands ({', '.join(CUBE_TO_S2)}); cube has {list(batch.bands)}"
            )
        x, mask = presto_arrays(s2)
        months = np.broadcast_to(batch.month, (x.shape[0], t))
        latlons = np.stack([batch.lat.reshape(-1), batch.lon.reshape(-1)], -1)
        dw = np.full((x.shape[0], t), DW_MISSING)
        emb = run_presto(model, x, mask, dw, months, latlons, device, self.pixel_batch)
        any_valid = (mask[..., : PRESTO_BANDS.index("temperature_2m")] == 0).any(axis=(1, 2))
        emb[~any_valid] = np.nan
        return emb.reshape(b, h, w, -1)


# ------------------------------------------------------------------------------------ registry spec
def _build(state: Mapping[str, torch.Tensor], weights_path: Path) -> BuiltEncoder:
    """The released checkpoint has no config: the architecture is the default one."""
    model = Presto.from_state_dict(state)
    config = {"embedding_size": 128, "depth": 2, "num_heads": 8, "mlp_ratio": 4}
    return BuiltEncoder(model, model.embedding_size, config)


def _adapter(info: EncoderInfo, patch_size: int) -> PrestoAdapter:
    """Per-pixel adapter; ``patch_size`` does not apply to a pixel model."""
    return PrestoAdapter()


#: Presto: pixel time series; weights on GitHub. A pixel's sequence: 9 tokens a step (8 band groups
#: and Dynamic World) plus the static SRTM and location tokens.
ENCODER_SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="presto",
        kind="pixel",
        source=WeightsSource(
            "default_model.pt", url="https://raw.githubusercontent.com/nasaharvest/presto/main/data/default_model.pt"
        ),
        build=_build,
        adapter=_adapter,
        default_chip=fixed_chip(64),
        tokens_per_step=9,
        extra_tokens=2,
        normalisation="built-in constants of presto/dataops/pipelines/s1_s2_era5_srtm.py (presto_normalise)",
    ),
)
