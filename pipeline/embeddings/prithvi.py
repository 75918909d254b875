"""Prithvi-EO-2.0 encoder (Szwarcman et al. 2024) in plain torch.

ViT with a 3-D (t, h, w) patch embedding, fixed 3-D sin-cos position encoding (interpolated
bicubically, ``align_corners=True``, when the chip size differs from the configured one), optional
temporal (year, day-of-year) and location (lat, lon) encodings with learnt scales (the ``-TL``
models), a CLS token and pre-LN blocks. Input ``x [B, C, T, H, W]`` normalised with
:data:`PRITHVI_V2_MEAN` / :data:`PRITHVI_V2_STD` (HLS reflectance × 1e4; bands :data:`PRITHVI_BANDS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.embeddings.chips import DN_PER_REFLECTANCE, ChipBatch, autocast, to_device
from pipeline.embeddings.layers import Block, sincos_1d
from pipeline.embeddings.spec import BuiltEncoder, EncoderInfo, EncoderSpec
from pipeline.embeddings.weights import WeightsSource

#: Pretraining bands (HLS): Blue, Green, Red, NIR narrow, SWIR 1, SWIR 2, as cube common names.
PRITHVI_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir08", "swir16", "swir22")
#: Prithvi-EO-2.0 normalisation (HLS DN = reflectance × 1e4), terratorch ``prithvi_vit.py``.
PRITHVI_V2_MEAN: tuple[float, ...] = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
PRITHVI_V2_STD: tuple[float, ...] = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


@dataclass(frozen=True)
class PrithviConfig:
    """Architecture hyper-parameters (the encoder part of the released configs)."""

    img_size: int = 224
    patch_size: tuple[int, int, int] = (1, 16, 16)
    num_frames: int = 4
    in_chans: int = 6
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    coords_encoding: tuple[str, ...] = field(default=())
    coords_scale_learn: bool = False
    norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)


class _CoordsOptions(TypedDict):
    coords_encoding: tuple[str, ...]
    coords_scale_learn: bool


_TL: _CoordsOptions = {"coords_encoding": ("time", "location"), "coords_scale_learn": True}
#: Released Prithvi-EO-2.0 configurations (terratorch ``prithvi_cfgs``; HF ``ibm-nasa-geospatial/*``).
PRITHVI_CONFIGS: dict[str, PrithviConfig] = {
    "prithvi-eo-2.0-tiny-tl": PrithviConfig(embed_dim=256, depth=4, num_heads=4, **_TL),
    "prithvi-eo-2.0-100m-tl": PrithviConfig(embed_dim=768, depth=12, num_heads=12, **_TL),
    "prithvi-eo-2.0-300m": PrithviConfig(embed_dim=1024, depth=24, num_heads=16),
    "prithvi-eo-2.0-300m-tl": PrithviConfig(embed_dim=1024, depth=24, num_heads=16, **_TL),
    "prithvi-eo-2.0-600m": PrithviConfig(embed_dim=1280, depth=32, num_heads=16, patch_size=(1, 14, 14)),
    "prithvi-eo-2.0-600m-tl": PrithviConfig(embed_dim=1280, depth=32, num_heads=16, patch_size=(1, 14, 14), **_TL),
}


def _sincos_np(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def pos_embed_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[1, 1 + t·h·w, dim]`` fixed encoding ``[w (6/16) | h (6/16) | t (4/16)]`` with a zero CLS row.

    Computed like the reference (in float64, then cast to float32).
    """
    if dim % 16:
        raise ValueError(f"Prithvi embed_dim must be divisible by 16, got {dim}")
    t, h, w = grid
    w_emb = np.tile(_sincos_np(dim // 16 * 6, np.arange(w)), (t * h, 1))
    h_emb = np.tile(np.repeat(_sincos_np(dim // 16 * 6, np.arange(h)), w, axis=0), (t, 1))
    t_emb = np.repeat(_sincos_np(dim // 16 * 4, np.arange(t)), h * w, axis=0)
    table = np.concatenate([np.zeros((1, dim)), np.concatenate([w_emb, h_emb, t_emb], axis=1)], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


class CoordEncoder(nn.Module):
    """Sin-cos encoding of two scalars (year and day-of-year, or lat and lon) times a scale."""

    scale: torch.Tensor  # a parameter or a buffer

    def __init__(self, embed_dim: int, trainable_scale: bool) -> None:
        super().__init__()
        self.first_dim = embed_dim // 2
        self.second_dim = embed_dim - self.first_dim
        if trainable_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` float -> ``[..., embed_dim]``."""
        shape = coords.shape[:-1] + (-1,)
        a = sincos_1d(self.first_dim, coords[..., 0].flatten(), self.first_dim / 2).reshape(shape)
        b = sincos_1d(self.second_dim, coords[..., 1].flatten(), self.second_dim / 2).reshape(shape)
        return self.scale * torch.cat([a, b], dim=-1)


class PatchEmbed3D(nn.Module):
    """Conv3d patch embedding ``[B, C, T, H, W] -> [B, (t h w), D]``."""

    def __init__(self, patch_size: tuple[int, int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PrithviViT(nn.Module):
    """Prithvi-EO-2.0 encoder; :meth:`forward` returns the final-normed tokens ``[B, 1 + t·h·w, D]``."""

    pos_embed: torch.Tensor  # a buffer

    def __init__(self, config: PrithviConfig = PRITHVI_CONFIGS["prithvi-eo-2.0-300m-tl"]) -> None:
        super().__init__()
        self.config = config
        c = config
        pt, ph, pw = c.patch_size
        self.patch_size = (pt, ph, pw)
        self.grid = (c.num_frames // c.patch_size[0], c.img_size // c.patch_size[1], c.img_size // c.patch_size[2])
        self.patch_embed = PatchEmbed3D(self.patch_size, c.in_chans, c.embed_dim)
        self.temporal_encoding = "time" in c.coords_encoding
        self.location_encoding = "location" in c.coords_encoding
        if self.temporal_encoding:
            if c.patch_size[0] != 1:
                raise ValueError("temporal encoding needs a temporal patch size of 1")
            self.temporal_embed_enc = CoordEncoder(c.embed_dim, c.coords_scale_learn)
        if self.location_encoding:
            self.location_embed_enc = CoordEncoder(c.embed_dim, c.coords_scale_learn)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", pos_embed_3d(c.embed_dim, self.grid), persistent=False)
        self.blocks = nn.ModuleList(
            [Block(c.embed_dim, c.num_heads, c.mlp_ratio, norm_eps=c.norm_eps) for _ in range(c.depth)]
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)

    def grid_for(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """Token grid ``(t, h, w)`` for an input of ``T×H×W`` pixels (remainders are dropped by the conv)."""
        return t // self.patch_size[0], h // self.patch_size[1], w // self.patch_size[2]

    def interpolated_pos_embed(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Position table for another token grid: exact for a new t, bicubic (align_corners) in h, w."""
        if grid == self.grid:
            return self.pos_embed
        base_grid = self.grid
        table = self.pos_embed
        if grid[0] != base_grid[0]:
            base_grid = (grid[0], *base_grid[1:])
            table = pos_embed_3d(self.config.embed_dim, base_grid).to(self.pos_embed.device)
        if grid[1:] == base_grid[1:]:
            return table
        d = table.shape[-1]
        patch = table[:, 1:].reshape(*base_grid, d).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=grid[1:], mode="bicubic", align_corners=True)
        return torch.cat([table[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)

    def forward_features(
        self, x: torch.Tensor, temporal_coords: torch.Tensor | None = None, location_coords: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Hidden states after each block; the last one is final-normed. ``x``: ``[B, C, T, H, W]``
        (or ``[B, C, H, W]`` for one frame); ``temporal_coords [B, T, 2]`` (year, day of year);
        ``location_coords [B, 2]`` (lat, lon degrees). Token order: CLS, then ``(t, h, w)``."""
        if x.dim() == 4:
            x = x.unsqueeze(2)
        b, c, t, h, w = x.shape
        if c != self.config.in_chans:
            raise ValueError(f"Prithvi expects {self.config.in_chans} bands, got x of shape {tuple(x.shape)}")
        grid = self.grid_for(t, h, w)
        if min(grid) < 1:
            raise ValueError(f"input {t}x{h}x{w} is smaller than one patch {self.patch_size}")
        pos = self.interpolated_pos_embed(grid).to(x.dtype)
        tokens = self.patch_embed(x) + pos[:, 1:]
        if self.temporal_encoding and temporal_coords is not None:
            if temporal_coords.shape[:2] != (b, grid[0]):
                raise ValueError(
                    f"temporal_coords must be [B, T, 2] = ({b}, {grid[0]}, 2), got {tuple(temporal_coords.shape)}"
                )
            enc = self.temporal_embed_enc(temporal_coords)
            tokens = tokens + torch.repeat_interleave(enc, grid[1] * grid[2], dim=1)
        if self.location_encoding and location_coords is not None:
            tokens = tokens + self.location_embed_enc(location_coords).unsqueeze(1)
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        out = []
        for blk in self.blocks:
            tokens = blk(tokens)
            out.append(tokens)
        out[-1] = self.norm(tokens)
        return out

    def forward(
        self, x: torch.Tensor, temporal_coords: torch.Tensor | None = None, location_coords: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final-normed tokens ``[B, 1 + t·h·w, D]`` (index 0 is CLS)."""
        return self.forward_features(x, temporal_coords, location_coords)[-1]

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], config: PrithviConfig) -> PrithviViT:
        """Load a released ``Prithvi_EO_V2_*.pt`` (MAE layout ``encoder.*``/``decoder.*``, or encoder-only)
        strictly. ``pos_embed`` is regenerated, never loaded; decoder tensors are dropped."""
        if any(k.startswith("encoder.") for k in state):
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        state = {k: v for k, v in state.items() if k != "pos_embed"}
        w = state.get("patch_embed.proj.weight")
        if w is not None and (w.shape[0] != config.embed_dim or tuple(w.shape[2:]) != tuple(config.patch_size)):
            raise ValueError(
                f"checkpoint patch embedding {tuple(w.shape)} does not match config "
                f"embed_dim={config.embed_dim}, patch_size={config.patch_size}"
            )
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.eval()


def config_from_json(cfg: Mapping) -> PrithviConfig:
    """A :class:`PrithviConfig` from a terratorch-style config dict (extra keys ignored)."""
    known = {k: cfg[k] for k in PrithviConfig.__dataclass_fields__ if k in cfg and k != "norm_eps"}
    if "patch_size" in known:
        known["patch_size"] = tuple(known["patch_size"])
    if "coords_encoding" in known:
        known["coords_encoding"] = tuple(known["coords_encoding"] or ())
    return replace(PrithviConfig(), **known)


# ------------------------------------------------------------------------------------- cube adapter
class PrithviAdapter:
    """Prithvi-EO-2.0 per-patch embeddings: final-normed patch tokens averaged over frames.

    Bands blue, green, red, nir08 (NIR narrow; ``nir`` if absent), swir16, swir22 as DN; masked
    pixels are set to the band mean (0 after normalisation): Prithvi has no mask input.
    Temporal (year, day of year) and location (chip centre) coordinates feed the -TL models.

    Normalisation: HLS mean / std of terratorch ``prithvi_vit.py`` (:data:`PRITHVI_V2_MEAN`,
    :data:`PRITHVI_V2_STD`; DN = reflectance × 1e4).
    """

    kind = "patch"
    pooling = "patch tokens (final LayerNorm) averaged over frames; CLS dropped"

    def __init__(self, patch_size: int) -> None:
        self.unit = patch_size

    def inputs(self, batch: ChipBatch) -> dict[str, np.ndarray]:
        bands = dict(batch.bands)
        if "nir08" not in bands and "nir" in bands:
            bands["nir08"] = bands["nir"]
        missing = [k for k in PRITHVI_BANDS if k not in bands]
        if missing:
            raise ValueError(f"Prithvi needs bands {PRITHVI_BANDS}; the cube lacks {missing}")
        raw = np.stack([bands[k] for k in PRITHVI_BANDS], axis=1) * DN_PER_REFLECTANCE  # [B, 6, T, h, w]
        mean = np.asarray(PRITHVI_V2_MEAN)[None, :, None, None, None]
        std = np.asarray(PRITHVI_V2_STD)[None, :, None, None, None]
        x = np.nan_to_num((raw - mean) / std, nan=0.0).astype(np.float32)
        b, t = x.shape[0], x.shape[2]
        tc = np.stack(np.broadcast_arrays(batch.year[None], batch.doy[None]), -1).astype(np.float32)
        tc = np.broadcast_to(tc, (b, t, 2))
        lc = np.stack([batch.lat.mean(axis=(1, 2)), batch.lon.mean(axis=(1, 2))], -1).astype(np.float32)
        valid = np.isfinite(raw).all(axis=1)  # [B, T, h, w]
        return {"x": x, "temporal_coords": tc, "location_coords": lc, "valid": valid}

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        inp = self.inputs(batch)
        b, _, t, h, w = inp["x"].shape
        p = self.unit
        with torch.inference_mode(), autocast(device):
            tokens = model(
                to_device(inp["x"], device),
                to_device(inp["temporal_coords"], device),
                to_device(inp["location_coords"], device),
            )
        grid = (t, h // p, w // p)
        patches = tokens[:, 1:].float().reshape(b, *grid, -1).mean(1).cpu().numpy()
        valid = inp["valid"][:, :, : grid[1] * p, : grid[2] * p]
        seen = valid.reshape(b, t, grid[1], p, grid[2], p).any(axis=(1, 3, 5))
        patches[~seen] = np.nan
        return patches


# ------------------------------------------------------------------------------------ registry spec
#: Released checkpoints: model name -> (HF repo under ``ibm-nasa-geospatial``, weights file).
RELEASES: dict[str, tuple[str, str]] = {
    "prithvi-eo-2.0-tiny-tl": ("Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"),
    "prithvi-eo-2.0-100m-tl": ("Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "prithvi-eo-2.0-300m": ("Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi-eo-2.0-300m-tl": ("Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi-eo-2.0-600m": ("Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi-eo-2.0-600m-tl": ("Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}
DEFAULT_RELEASE = "prithvi-eo-2.0-300m-tl"  #: the one the plain name ``prithvi`` means


def _build(state: Mapping[str, torch.Tensor], weights_path: Path, preset: PrithviConfig) -> BuiltEncoder:
    """A terratorch-style ``config.json`` beside the weights overrides the named ``preset``."""
    beside = weights_path.parent / "config.json"
    config = config_from_json(json.loads(beside.read_text())) if beside.is_file() else preset
    return BuiltEncoder(PrithviViT.from_state_dict(state, config), config.embed_dim, config.to_dict())


def _adapter(info: EncoderInfo, patch_size: int) -> PrithviAdapter:
    """The cell is the model's own (square) spatial patch; the requested ``patch_size`` does not apply."""
    ph, pw = info.config["patch_size"][1:]
    if ph != pw:
        raise ValueError(f"{info.name}: only square patches are supported, got {ph}x{pw}")
    return PrithviAdapter(int(ph))


def _spec(name: str, repo: str, filename: str) -> EncoderSpec:
    # a chip's sequence: one token per patch and frame (all bands in one 3-D patch) plus CLS
    return EncoderSpec(
        name=name,
        kind="patch",
        aliases=("prithvi",) if name == DEFAULT_RELEASE else (),
        source=WeightsSource(filename, hf_repo=f"ibm-nasa-geospatial/{repo}"),
        build=partial(_build, preset=PRITHVI_CONFIGS[name]),
        adapter=_adapter,
        default_chip=lambda info, unit: int(info.config["img_size"]),  # the pretraining chip: no interpolation
        tokens_per_step=1,
        extra_tokens=1,
        normalisation="built-in HLS mean/std of terratorch prithvi_vit.py (PRITHVI_V2_MEAN, PRITHVI_V2_STD)",
    )


#: Prithvi-EO-2.0: one spec per released checkpoint, weights on the HF hub.
ENCODER_SPECS: tuple[EncoderSpec, ...] = tuple(_spec(name, *where) for name, where in RELEASES.items())
