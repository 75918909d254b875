"""Galileo encoder (Tseng et al. 2025, nasaharvest/galileo) in plain torch.

Multimodal space-time model. Inputs (all float32 but ``months``):
``s_t_x [B,H,W,T,13]`` space-time bands (:data:`SPACE_TIME_BANDS`), ``sp_x [B,H,W,16]`` space bands,
``t_x [B,T,6]`` time bands, ``st_x [B,18]`` static bands; masks per *group*
``s_t_m [B,H,W,T,7]``, ``sp_m [B,H,W,3]``, ``t_m [B,T,3]``, ``st_m [B,4]`` (0 visible, >=1 hidden);
``months [B,T]`` int64 (0 = January); ``patch_size`` p (H = W, both divisible by p) and the input pixel
size in metres. The 8×8 patch kernels are resized to p×p with the pseudo-inverse of the bicubic
(antialiased) resize matrix (FlexiViT), as in the authors' ``FlexiPatchEmbed``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.embeddings.chips import (
    DN_PER_REFLECTANCE,
    ChipBatch,
    autocast,
    latlon_to_cartesian,
    ndvi,
    s2_reflectance,
    to_device,
)
from pipeline.embeddings.layers import Block, drop_masked_tokens, month_table, sincos_1d
from pipeline.embeddings.spec import BuiltEncoder, EncoderInfo, EncoderSpec
from pipeline.embeddings.weights import WeightsSource, companion_file

SPACE_TIME_BANDS = ("VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "NDVI")
SPACE_BANDS = (
    "elevation",
    "slope",
    "DW_water",
    "DW_trees",
    "DW_grass",
    "DW_flooded_vegetation",
    "DW_crops",
    "DW_shrub_and_scrub",
    "DW_built",
    "DW_bare",
    "DW_snow_and_ice",
    "WC_temporarycrops",
    "WC_maize",
    "WC_wintercereals",
    "WC_springcereals",
    "WC_irrigation",
)
TIME_BANDS = ("temperature_2m", "total_precipitation_sum", "def", "soil", "aet", "avg_rad")
STATIC_BANDS = ("LS", "location_x", "location_y", "location_z") + tuple(f"{b}_static" for b in SPACE_BANDS[2:])

SPACE_TIME_GROUPS: dict[str, list[int]] = {
    "S1": [0, 1],
    "S2_RGB": [2, 3, 4],
    "S2_Red_Edge": [5, 6, 7],
    "S2_NIR_10m": [8],
    "S2_NIR_20m": [9],
    "S2_SWIR": [10, 11],
    "NDVI": [12],
}
SPACE_GROUPS: dict[str, list[int]] = {"SRTM": [0, 1], "DW": list(range(2, 11)), "WC": list(range(11, 16))}
TIME_GROUPS: dict[str, list[int]] = {"ERA5": [0, 1], "TC": [2, 3, 4], "VIIRS": [5]}
STATIC_GROUPS: dict[str, list[int]] = {
    "LS": [0],
    "location": [1, 2, 3],
    "DW_static": list(range(4, 13)),
    "WC_static": list(range(13, 18)),
}
BASE_GSD_M = 10.0  #: ground sample distance the spatial encoding is relative to


@lru_cache(maxsize=16)
def resize_pinv(old: int, new: int) -> torch.Tensor:
    """``[new², old²]`` pseudo-inverse of the bicubic+antialias resize matrix old×old -> new×new (float32)."""
    basis = torch.eye(old * old).reshape(old * old, 1, old, old)
    resized = F.interpolate(basis, (new, new), mode="bicubic", antialias=True).reshape(old * old, new * new)
    return torch.linalg.pinv(resized)


class FlexiPatchEmbed(nn.Module):
    """Conv patch embedding with a ``base``×``base`` kernel, resized to any patch size ``p <= base``."""

    def __init__(self, in_chans: int, embed_dim: int, base: int = 8) -> None:
        super().__init__()
        self.base = base
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=base, stride=base)

    def kernel(self, p: int) -> torch.Tensor:
        """The ``[D, C, p, p]`` kernel for patch size p (the stored one when p = base)."""
        w = self.proj.weight
        if p == self.base:
            return w
        pinv = resize_pinv(self.base, p).to(device=w.device, dtype=w.dtype)
        return (w.reshape(*w.shape[:2], -1) @ pinv.T).reshape(*w.shape[:2], p, p)

    def forward(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """``[B,H,W,(T,)C]`` -> ``[B,H/p,W/p,(T,)D]``."""
        b = x.shape[0]
        has_time = x.dim() == 5
        if has_time:
            t = x.shape[3]
            x = x.permute(0, 3, 4, 1, 2).reshape(b * t, x.shape[4], x.shape[1], x.shape[2])
        else:
            x = x.permute(0, 3, 1, 2)
        y = F.conv2d(x, self.kernel(p), bias=self.proj.bias, stride=p)
        if has_time:
            return y.reshape(b, t, *y.shape[1:]).permute(0, 3, 4, 1, 2)
        return y.permute(0, 2, 3, 1)


def spatial_table(dim: int, n: int, gsd_ratio: float, device: torch.device) -> torch.Tensor:
    """``[n, n, dim]`` 2-D sin-cos encoding; first dim/2 encode column j, last dim/2 row i (× gsd_ratio)."""
    idx = torch.arange(n, device=device, dtype=torch.float32) * gsd_ratio
    cols = idx[None, :].expand(n, n)
    rows = idx[:, None].expand(n, n)
    emb = torch.cat([sincos_1d(dim // 2, cols, dim), sincos_1d(dim // 2, rows, dim)], dim=1)
    return emb.reshape(n, n, dim)


@dataclass
class GalileoOutput:
    """Normed tokens (masked ones = ``norm.bias``) and token-level masks (0 visible, >= 1 hidden)."""

    s_t: torch.Tensor  # [B, H/p, W/p, T, 7, D]
    sp: torch.Tensor  # [B, H/p, W/p, 3, D]
    t: torch.Tensor  # [B, T, 3, D]
    st: torch.Tensor  # [B, 4, D]
    s_t_m: torch.Tensor
    sp_m: torch.Tensor
    t_m: torch.Tensor
    st_m: torch.Tensor

    def pooled(self) -> torch.Tensor:
        """Mean of the visible tokens, ``[B, D]`` (the authors' ``average_tokens``)."""
        b, d = self.st.shape[0], self.st.shape[-1]
        x = torch.cat([self.s_t.reshape(b, -1, d), self.sp.reshape(b, -1, d), self.t.reshape(b, -1, d), self.st], 1)
        m = torch.cat([self.s_t_m.reshape(b, -1), self.sp_m.reshape(b, -1), self.t_m.reshape(b, -1), self.st_m], 1)
        keep = (m == 0).to(x.dtype)
        return (x * keep.unsqueeze(-1)).sum(1) / keep.sum(-1, keepdim=True)

    def pooled_per_patch(self) -> torch.Tensor:
        """Per spatial patch mean of its space-time and space tokens plus all time and static tokens,
        ``[B, H/p·W/p, D]`` (the authors' ``apply_mask_and_average_tokens_per_patch``, weights ``1 − m``)."""
        b, h, w, d = *self.s_t.shape[:3], self.s_t.shape[-1]
        s = h * w
        x = torch.cat(
            [
                self.s_t.reshape(b, s, -1, d),
                self.sp.reshape(b, s, -1, d),
                self.t.reshape(b, 1, -1, d).expand(b, s, -1, d),
                self.st.reshape(b, 1, -1, d).expand(b, s, -1, d),
            ],
            2,
        )
        m = torch.cat(
            [
                self.s_t_m.reshape(b, s, -1),
                self.sp_m.reshape(b, s, -1),
                self.t_m.reshape(b, 1, -1).expand(b, s, -1),
                self.st_m.reshape(b, 1, -1).expand(b, s, -1),
            ],
            2,
        )
        weight = (1 - m).to(x.dtype)
        return (x * weight.unsqueeze(-1)).sum(2) / weight.sum(-1, keepdim=True)


class Galileo(nn.Module):
    """The Galileo encoder (nano: 128-d, 4 blocks, 8 heads, MLP ratio 4, max patch 8, 24 steps)."""

    def __init__(
        self,
        embedding_size: int = 128,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_sequence_length: int = 24,
        max_patch_size: int = 8,
    ) -> None:
        super().__init__()
        d, q = embedding_size, embedding_size // 4
        self.embedding_size = d
        self.max_patch_size = max_patch_size
        self.space_time_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(len(i), d, max_patch_size) for g, i in SPACE_TIME_GROUPS.items()}
        )
        self.space_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(len(i), d, max_patch_size) for g, i in SPACE_GROUPS.items()}
        )
        self.time_embed = nn.ModuleDict({g: nn.Linear(len(i), d) for g, i in TIME_GROUPS.items()})
        self.static_embed = nn.ModuleDict({g: nn.Linear(len(i), d) for g, i in STATIC_GROUPS.items()})
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(SPACE_TIME_GROUPS), q))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_GROUPS), q))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_GROUPS), q))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_GROUPS), q))
        steps = torch.arange(max_sequence_length, dtype=torch.float32)
        self.pos_embed = nn.Parameter(sincos_1d(q, steps, q * 2), requires_grad=False)
        self.month_embed = nn.Embedding.from_pretrained(month_table(q), freeze=True)
        self.blocks = nn.ModuleList([Block(d, num_heads, mlp_ratio, fused_qkv=False) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)

    def _project(self, s_t_x, sp_x, t_x, st_x, s_t_m, sp_m, t_m, st_m, p):
        """Per-group linear projections; a group hidden everywhere in the batch gets zeros."""
        b, h, w, t, _ = s_t_x.shape
        hp, wp, d = h // p, w // p, self.embedding_size
        st_tok, sp_tok, t_tok, stc_tok = [], [], [], []
        s_t_mt = s_t_m[:, ::p, ::p]
        sp_mt = sp_m[:, ::p, ::p]
        for i, (g, idx) in enumerate(SPACE_TIME_GROUPS.items()):
            visible = bool(s_t_mt[..., i].min() == 0)
            st_tok.append(self.space_time_embed[g](s_t_x[..., idx], p) if visible else s_t_x.new_zeros(b, hp, wp, t, d))
        for i, (g, idx) in enumerate(SPACE_GROUPS.items()):
            visible = bool(sp_mt[..., i].min() == 0)
            sp_tok.append(self.space_embed[g](sp_x[..., idx], p) if visible else sp_x.new_zeros(b, hp, wp, d))
        for i, (g, idx) in enumerate(TIME_GROUPS.items()):
            visible = bool(t_m[..., i].min() == 0)
            t_tok.append(self.time_embed[g](t_x[..., idx]) if visible else t_x.new_zeros(b, t, d))
        for i, (g, idx) in enumerate(STATIC_GROUPS.items()):
            visible = bool(st_m[..., i].min() == 0)
            stc_tok.append(self.static_embed[g](st_x[..., idx]) if visible else st_x.new_zeros(b, d))
        return (
            torch.stack(st_tok, -2),
            torch.stack(sp_tok, -2),
            torch.stack(t_tok, -2),
            torch.stack(stc_tok, -2),
            s_t_mt,
            sp_mt,
            t_m,
            st_m,
        )

    def _encodings(self, s_t, sp, t_x, st, months, p, input_res_m):
        """Add ``[channel | pos(t) | month | spatial]`` (zeros where a part does not apply)."""
        b, h, w, t, cst, _ = s_t.shape
        q = self.embedding_size // 4
        pos = self.pos_embed[:t]
        mon = self.month_embed(months)  # [B, T, q]
        spatial = spatial_table(q, h, input_res_m * p / BASE_GSD_M, s_t.device).to(s_t.dtype)
        s_t_enc = torch.cat(
            [
                self.s_t_channel_embed.expand(b, h, w, t, -1, -1),
                pos[None, None, None, :, None].expand(b, h, w, t, cst, q),
                mon[:, None, None, :, None].expand(b, h, w, t, cst, q),
                spatial[None, :, :, None, None].expand(b, h, w, t, cst, q),
            ],
            -1,
        )
        csp = sp.shape[-2]
        sp_enc = torch.cat(
            [
                self.sp_channel_embed.expand(b, h, w, -1, -1),
                sp.new_zeros(b, h, w, csp, 2 * q),
                spatial[None, :, :, None].expand(b, h, w, csp, q),
            ],
            -1,
        )
        ct = t_x.shape[-2]
        t_enc = torch.cat(
            [
                self.t_channel_embed.expand(b, t, -1, -1),
                pos[None, :, None].expand(b, t, ct, q),
                mon[:, :, None].expand(b, t, ct, q),
                t_x.new_zeros(b, t, ct, q),
            ],
            -1,
        )
        st_enc = torch.cat([self.st_channel_embed.expand(b, -1, -1), st.new_zeros(b, st.shape[1], 3 * q)], -1)
        return s_t + s_t_enc, sp + sp_enc, t_x + t_enc, st + st_enc

    def forward(
        self,
        s_t_x: torch.Tensor,
        sp_x: torch.Tensor,
        t_x: torch.Tensor,
        st_x: torch.Tensor,
        s_t_m: torch.Tensor,
        sp_m: torch.Tensor,
        t_m: torch.Tensor,
        st_m: torch.Tensor,
        months: torch.Tensor,
        patch_size: int,
        input_resolution_m: float = 10.0,
    ) -> GalileoOutput:
        """Encode; returns normed tokens and token-level masks (see :class:`GalileoOutput`)."""
        b, h, w, t, c = s_t_x.shape
        p = int(patch_size)
        if c != len(SPACE_TIME_BANDS):
            raise ValueError(f"s_t_x must have {len(SPACE_TIME_BANDS)} bands {SPACE_TIME_BANDS}, got {c}")
        if h != w or h % p or not 1 <= p <= self.max_patch_size:
            raise ValueError(
                f"Galileo needs H == W divisible by patch_size in 1..{self.max_patch_size}; "
                f"got H={h}, W={w}, patch_size={p}"
            )
        if t > self.pos_embed.shape[0]:
            raise ValueError(f"Galileo supports at most {self.pos_embed.shape[0]} time steps, got {t}")
        s_t, sp, tt, st, s_t_mt, sp_mt, t_mt, st_mt = self._project(s_t_x, sp_x, t_x, st_x, s_t_m, sp_m, t_m, st_m, p)
        s_t, sp, tt, st = self._encodings(s_t, sp, tt, st, months.long(), p, float(input_resolution_m))
        shapes = [s_t.shape, sp.shape, tt.shape, st.shape]
        d = self.embedding_size
        x = torch.cat([s_t.reshape(b, -1, d), sp.reshape(b, -1, d), tt.reshape(b, -1, d), st], 1)
        m = torch.cat([s_t_mt.reshape(b, -1), sp_mt.reshape(b, -1), t_mt.reshape(b, -1), st_mt], 1) >= 1
        kept, order, padded = drop_masked_tokens(x, m)
        for blk in self.blocks:
            kept = blk(kept, key_keep=~padded)
        full = kept.new_zeros(x.shape)
        n_keep = kept.shape[1]
        sorted_tokens = full.clone()
        sorted_tokens[:, :n_keep] = kept * (~padded).unsqueeze(-1).to(kept.dtype)
        full.scatter_(1, order[:, :, None].expand_as(full), sorted_tokens)
        full = self.norm(full)
        sizes = [int(np.prod(s[1:-1])) for s in shapes]
        parts = torch.split(full, sizes, dim=1)
        s_t, sp, tt, st = (part.reshape(shape) for part, shape in zip(parts, shapes, strict=True))
        return GalileoOutput(s_t, sp, tt, st, s_t_mt, sp_mt, t_mt, st_mt)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], config: Mapping | None = None) -> Galileo:
        """Build from the released ``encoder.pt`` (strict) and the ``config.json`` ``model.encoder`` section."""
        enc_cfg = dict((config or {}).get("model", {}).get("encoder", {}))
        kwargs = {
            k: enc_cfg[k]
            for k in ("embedding_size", "depth", "num_heads", "mlp_ratio", "max_sequence_length", "max_patch_size")
            if k in enc_cfg
        }
        model = cls(**kwargs)
        model.load_state_dict(dict(state), strict=True)
        return model.eval()


@dataclass(frozen=True)
class GalileoNormalizer:
    """``x' = (x − shift) / div`` per band for each input array (from the authors' normalization.json).

    The std rule (shift = mean − 2·std, div = 4·std) applies to the space-time bands except NDVI,
    elevation/slope, all time bands and LandScan; the others keep their defaults (NDVI, DW,
    location: (0, 1); WC: (0, 100)); the static LandScan constants are truncated to int as in
    the authors' int64 static arrays.
    """

    shift: dict[int, np.ndarray]
    div: dict[int, np.ndarray]

    @classmethod
    def from_json(cls, path: str | Path, std_multiplier: float = 2.0) -> GalileoNormalizer:
        stats = json.loads(Path(path).read_text())
        defaults = {
            13: ([0.0] * 13, [1.0] * 13),
            16: ([0.0] * 16, [1.0] * 11 + [100.0] * 5),
            6: ([0.0] * 6, [1.0] * 6),
            18: ([0.0] * 18, [1.0] * 13 + [100.0] * 5),
        }
        std_bands = {13: range(12), 16: range(2), 6: range(6), 18: range(1)}
        shift: dict[int, np.ndarray] = {}
        div: dict[int, np.ndarray] = {}
        for n, (sh_default, dv_default) in defaults.items():
            sh, dv = np.array(sh_default), np.array(dv_default)
            entry = stats[str(n)]
            mean, std = np.asarray(entry["mean"], float), np.asarray(entry["std"], float)
            for i in std_bands[n]:
                sh[i] = mean[i] - std_multiplier * std[i]
                dv[i] = 2 * std_multiplier * std[i]
            if n == 18:
                sh, dv = np.trunc(sh), np.trunc(dv)
            shift[n], div[n] = sh, dv
        return cls(shift, div)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise an array whose last dimension is 13, 16, 6 or 18 bands; returns float32."""
        n = x.shape[-1]
        if n not in self.shift:
            raise ValueError(f"no Galileo normalisation for {n} bands (expected one of {sorted(self.shift)})")
        return ((np.asarray(x, np.float64) - self.shift[n]) / self.div[n]).astype(np.float32)


# ------------------------------------------------------------------------------------- cube adapter
class GalileoAdapter:
    """Galileo per-patch embeddings (the authors' ``apply_mask_and_average_tokens_per_patch``).

    Space-time: S2 bands and NDVI (S1 masked); a group is hidden in a patch at a step if any of its
    bands is missing anywhere in the patch. Space (SRTM, DW, WC) and time (ERA5, TerraClimate,
    VIIRS) groups are masked; of the static groups only ``location`` (chip centre) is visible.

    Normalisation: ``normalization.json`` of nasaharvest/galileo (mean ± 2 std, see
    :class:`GalileoNormalizer`), applied to DN (= reflectance × 1e4), as the authors'
    ``Normalizer(std=True, std_multiplier=2)``.
    """

    kind = "patch"
    pooling = "per-patch mean of unmasked tokens (Galileo apply_mask_and_average_tokens_per_patch)"

    def __init__(self, normalizer: GalileoNormalizer, patch_size: int = 4) -> None:
        self.normalizer = normalizer
        self.unit = patch_size

    def inputs(self, batch: ChipBatch) -> dict[str, np.ndarray]:
        b, t, h, w = batch.shape
        p = self.unit
        raw = np.zeros((b, h, w, t, len(SPACE_TIME_BANDS)), np.float64)
        present = np.zeros_like(raw, dtype=bool)
        s2 = s2_reflectance(batch.bands)
        for name, values in s2.items():
            i = SPACE_TIME_BANDS.index(name)
            v = values.transpose(0, 2, 3, 1)
            present[..., i] = np.isfinite(v)
            raw[..., i] = np.where(present[..., i], v * DN_PER_REFLECTANCE, 0)
        i8, i4, ind = (SPACE_TIME_BANDS.index(k) for k in ("B8", "B4", "NDVI"))
        raw[..., ind] = ndvi(raw[..., i8], raw[..., i4])
        present[..., ind] = present[..., i8] & present[..., i4]
        s_t_m = np.ones((b, h, w, t, len(SPACE_TIME_GROUPS)), np.float32)
        for g, idx in enumerate(SPACE_TIME_GROUPS.values()):
            ok = present[..., idx].all(-1)  # [b, h, w, t]
            ok_patch = ok.reshape(b, h // p, p, w // p, p, t).all(axis=(2, 4))
            s_t_m[..., g] = np.repeat(np.repeat(~ok_patch, p, axis=1), p, axis=2)
        lat, lon = batch.lat.mean(axis=(1, 2)), batch.lon.mean(axis=(1, 2))
        st = np.zeros((b, len(STATIC_BANDS)), np.float64)
        st[:, 1:4] = latlon_to_cartesian(torch.from_numpy(np.stack([lat, lon], -1))).numpy()
        return {
            "s_t_x": self.normalizer(raw),
            "sp_x": self.normalizer(np.zeros((b, h, w, len(SPACE_BANDS)))),
            "t_x": self.normalizer(np.zeros((b, t, len(TIME_BANDS)))),
            "st_x": self.normalizer(st),
            "s_t_m": s_t_m,
            "sp_m": np.ones((b, h, w, 3), np.float32),
            "t_m": np.ones((b, t, 3), np.float32),
            "st_m": np.tile(np.array([1, 0, 1, 1], np.float32), (b, 1)),
            "months": np.broadcast_to(batch.month.astype(np.int64), (b, t)),
        }

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        b, t, h, w = batch.shape
        if h != w:
            raise ValueError(f"Galileo chips must be square; got {h}x{w}")
        inp = self.inputs(batch)
        names = ("s_t_x", "sp_x", "t_x", "st_x", "s_t_m", "sp_m", "t_m", "st_m", "months")
        with torch.inference_mode(), autocast(device):
            out = model(*(to_device(inp[k], device) for k in names), self.unit, batch.res_m)
            emb = out.pooled_per_patch().float().cpu().numpy()
        p = self.unit
        emb = emb.reshape(b, h // p, w // p, -1)
        seen = (inp["s_t_m"][:, ::p, ::p] == 0).any(axis=(3, 4))
        emb[~seen] = np.nan
        return emb


# ------------------------------------------------------------------------------------ registry spec
#: companion file beside the weights with the authors' band statistics (read by the adapter)
NORMALIZATION_FILE = "normalization.json"


def _build(state: Mapping[str, torch.Tensor], weights_path: Path) -> BuiltEncoder:
    """Architecture from the ``config.json`` released beside ``encoder.pt``."""
    cfg = json.loads(companion_file(weights_path, "config.json").read_text())
    model = Galileo.from_state_dict(state, cfg)
    return BuiltEncoder(model, model.embedding_size, cfg["model"]["encoder"])


@lru_cache(maxsize=8)
def _normalizer(weights_path: str) -> GalileoNormalizer:
    # every batch task builds an adapter: read the statistics once per weights file and process
    return GalileoNormalizer.from_json(companion_file(Path(weights_path), NORMALIZATION_FILE))


def _adapter(info: EncoderInfo, patch_size: int) -> GalileoAdapter:
    """Patch adapter at the requested ``patch_size`` p (pixels; the 8x8 kernels are resized to p x p)."""
    return GalileoAdapter(_normalizer(info.weights_path), patch_size)


#: Galileo nano: weights on the HF hub with its config; normalisation statistics from the GitHub repo.
#: A chip's sequence: one token per space-time group (7) per patch and step, plus one.
ENCODER_SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="galileo-nano",
        kind="patch",
        aliases=("galileo",),
        source=WeightsSource(
            "encoder.pt",
            hf_repo="nasaharvest/galileo",
            hf_path="models/nano/encoder.pt",
            companions={
                "config.json": "models/nano/config.json",
                NORMALIZATION_FILE: "https://raw.githubusercontent.com/nasaharvest/galileo/main/config/normalization.json",
            },
        ),
        build=_build,
        adapter=_adapter,
        default_chip=lambda info, unit: 4 * unit,  # a chip of 4 x 4 patches
        tokens_per_step=len(SPACE_TIME_GROUPS),
        extra_tokens=1,
        normalisation=f"{NORMALIZATION_FILE} beside the weights (nasaharvest/galileo config/normalization.json)",
    ),
)
