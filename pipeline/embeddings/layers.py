"""Transformer building blocks shared by the Presto, Galileo and Prithvi encoders.

All blocks are pre-LayerNorm ViT blocks (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``) with
multi-head scaled-dot-product attention and an exact-GELU MLP. The parameter names follow the
released checkpoints: ``attn.qkv`` (fused, Presto / Prithvi via timm) or ``attn.q/k/v`` (Galileo).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention on ``[B, N, D]`` tokens with an optional key-padding mask.

    ``fused_qkv=True`` stores one ``qkv`` Linear (rows ordered q, k, v); ``False`` stores
    separate ``q``, ``k`` and ``v`` Linear layers. Both use biases.
    """

    def __init__(self, dim: int, num_heads: int, fused_qkv: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
        else:
            self.q = nn.Linear(dim, dim, bias=True)
            self.k = nn.Linear(dim, dim, bias=True)
            self.v = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B, N, D]``; ``key_keep``: ``[B, N]`` bool, True where a key may be attended to."""
        b, n, d = x.shape
        if self.fused_qkv:
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q, k, v = (
                lin(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2) for lin in (self.q, self.k, self.v)
            )
        attn_mask = None
        if key_keep is not None and not bool(key_keep.all()):  # no padding: let SDPA use its fused kernels
            attn_mask = key_keep[:, None, None, :].expand(b, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc1 -> GELU (exact) -> fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block (no LayerScale; drop-path is identity at inference)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, fused_qkv: bool = True, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, fused_qkv=fused_qkv)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_keep)
        return x + self.mlp(self.norm2(x))


def sincos_1d(embed_dim: int, pos: torch.Tensor, omega_denominator: float) -> torch.Tensor:
    """``[sin(pos·ω) | cos(pos·ω)]`` with ``ω_k = 10000^(−k / omega_denominator)``, ``k < embed_dim/2``.

    ``pos``: any-shaped float tensor (flattened) -> ``[M, embed_dim]`` in ``pos.dtype``.
    Prithvi uses ``omega_denominator = embed_dim/2``; Galileo's spatial table uses ``2·embed_dim``.
    """
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding size must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=pos.dtype, device=pos.device)
    omega = omega / omega_denominator
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def month_table(dim: int) -> torch.Tensor:
    """``[12, dim]`` month encoding (Presto and Galileo) ``[sin(2πm/12) × dim/2 | cos(2πm/12) × dim/2]``."""
    angles = torch.arange(0, 13) / (12 / (2 * math.pi))
    sin = torch.sin(angles)[:-1, None].expand(12, dim // 2)
    cos = torch.cos(angles)[:-1, None].expand(12, dim // 2)
    return torch.cat([sin, cos], dim=-1)


def drop_masked_tokens(x: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move kept tokens to the front of each row (stable) and cut to the longest kept length.

    ``x``: ``[B, N, D]``; ``masked``: ``[B, N]`` bool (True = drop). Returns ``(x_kept [B, L, D]``
    (padded rows zeroed), ``order [B, N]`` (the gather indices), ``padded [B, L]`` bool (True = padding)).
    This is the authors' formulation in both Presto and Galileo, so padding positions and their
    order match the released code.
    """
    keep_sorted, order = torch.sort((~masked).int(), dim=1, descending=True, stable=True)
    x = x.gather(1, order[:, :, None].expand_as(x))
    x = x * keep_sorted.unsqueeze(-1).to(x.dtype)
    length = int(keep_sorted.sum(-1).max())
    return x[:, :length], order, keep_sorted[:, :length] == 0
