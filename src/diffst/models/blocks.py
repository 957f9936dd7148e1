"""Building blocks: timestep embedding, residual blocks, resampling, attention, position codes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "CrossAttention",
    "Downsample",
    "ResBlock",
    "SelfAttention2d",
    "TimestepEmbedding",
    "Upsample",
    "grid_position_encoding",
    "group_norm",
    "recomputed",
    "resize_to",
    "timestep_embedding",
]


def recomputed(enabled: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; with ``enabled`` (and autograd on) its activations are not kept for
    backward but recomputed there (non-reentrant gradient checkpointing: same values, same
    gradients, the RNG state of dropout restored). ``fn`` must not update buffers (BatchNorm)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps.

    Parameters
    ----------
    t
        ``[B]`` timesteps (integer or real).
    dim
        Embedding width (even or odd; an odd width is zero-padded).

    Returns
    -------
    torch.Tensor
        ``[B, dim]`` float32: ``[cos(t·f_k), sin(t·f_k)]`` with geometric frequencies ``f_k``.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal timestep code followed by a two-layer MLP: ``[B] → [B, out_dim]``."""

    def __init__(self, freq_dim: int, out_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        return self.mlp(timestep_embedding(t, self.freq_dim).to(first.weight.dtype))


class ResBlock(nn.Module):
    """Residual block; with ``emb_dim`` the second norm is scale-shift (FiLM) conditioned.

    ``h = conv(SiLU(GN(x)))``; ``h = GN(h)·(1 + scale) + shift`` with ``(scale, shift)`` from
    the embedding; ``out = skip(x) + conv(dropout(SiLU(h)))``. Shapes ``[B, C_in, H, W] →
    [B, C_out, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int | None = None,
        *,
        dropout: float = 0.0,
        groups: int = 32,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels) if emb_dim is not None else None
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            if emb is None:
                raise ValueError("ResBlock built with an embedding needs `emb`")
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided 3×3 convolution: ``[B, C, H, W] → [B, C, ⌈H/2⌉, ⌈W/2⌉]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, L, C] → [B, heads, L, C/heads]``."""
    b, n, c = x.shape
    return x.reshape(b, n, n_heads, c // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, L, c] → [B, L, heads·c]``."""
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the positions of a feature map, with a residual."""

    def __init__(self, channels: int, n_heads: int, groups: int = 32) -> None:
        super().__init__()
        self.n_heads = _valid_heads(channels, n_heads)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = (_heads(z, self.n_heads) for z in self.qkv(tokens).chunk(3, dim=-1))
        out = self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens to context tokens (no residual).

    ``query [B, Lq, Cq]``, ``context [B, Lk, Ck]`` → ``[B, Lq, Cq]``. Optional position codes
    (``[Lq, Cq]`` / ``[B, Lk, Ck]`` or ``[Lk, Ck]``) are added to queries and keys, not to values.
    """

    def __init__(self, query_dim: int, context_dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = _valid_heads(query_dim, n_heads)
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_k = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(query_dim, query_dim)
        self.to_k = nn.Linear(context_dim, query_dim)
        self.to_v = nn.Linear(context_dim, query_dim)
        self.proj = nn.Linear(query_dim, query_dim)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        query_pos: torch.Tensor | None = None,
        context_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        qn, kn = self.norm_q(query), self.norm_k(context)
        q = self.to_q(qn if query_pos is None else qn + query_pos)
        k = self.to_k(kn if context_pos is None else kn + context_pos)
        v = self.to_v(kn)
        q, k, v = (_heads(z, self.n_heads) for z in (q, k, v))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


def _valid_heads(channels: int, n_heads: int) -> int:
    """Largest head count ≤ ``n_heads`` that divides ``channels``."""
    return max(h for h in range(1, n_heads + 1) if channels % h == 0)


def grid_position_encoding(
    rows: int, cols: int, dim: int, *, device: torch.device | None = None
) -> torch.Tensor:
    """Fixed 2-D sinusoidal code of cell centres on a ``rows × cols`` grid over the unit square.

    Grids of different sizes covering the same patch get matching codes at matching places,
    so tissue positions and cell-tile positions can be compared by attention.

    Returns
    -------
    torch.Tensor
        ``[rows·cols, dim]`` float32, row-major.
    """
    n_freq = max(dim // 4, 1)
    # Frequencies π/2 … 8π (periods 4 … 1/4 of the patch): no aliasing between grid cells.
    freqs = math.pi * 2.0 ** torch.linspace(-1.0, 3.0, n_freq, device=device)
    ys = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
    xs = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ay = yy.reshape(-1, 1) * freqs
    ax = xx.reshape(-1, 1) * freqs
    code = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=-1)
    return F.pad(code, (0, dim - code.shape[1])) if code.shape[1] < dim else code[:, :dim]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` to ``size`` (area pooling when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
