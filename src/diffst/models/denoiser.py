"""Conditional UNet denoiser over the HR gene map."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffst.models.blocks import (
    CrossAttention,
    Downsample,
    ResBlock,
    SelfAttention2d,
    TimestepEmbedding,
    Upsample,
    grid_position_encoding,
    group_norm,
    recomputed,
    resize_to,
)
from diffst.models.config import ModelConfig

__all__ = ["ConditionalUNet", "DenoiserOutput"]


@dataclass
class DenoiserOutput:
    """Output of the denoiser for one batch."""

    prediction: torch.Tensor
    """``[B, G, H, W]``: ε or v (as the diffusion configuration says)."""
    variance: torch.Tensor | None
    """``[B, G, H, W]`` raw learned-variance interpolation ``v`` (nominally in [-1, 1]) or None."""


class _Level(nn.Module):
    """Residual blocks (+ optional self-attention) of one UNet level and direction."""

    blocks: nn.ModuleList
    attn: nn.ModuleList

    def __init__(self, channels_in: list[int], out_ch: int, emb: int, cfg: ModelConfig, attn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c, out_ch, emb, dropout=cfg.dropout, groups=cfg.norm_groups)
            for c in channels_in
        )
        self.attn = nn.ModuleList(
            SelfAttention2d(out_ch, cfg.num_heads, cfg.norm_groups) if attn else nn.Identity()
            for _ in channels_in
        )


class ConditionalUNet(nn.Module):
    """UNet over ``x_t [B, G, H, W]`` conditioned on time and a fused conditioning map.

    Conditioning enters twice: *encoder-skip fusion* — at the entry of every encoder level the
    conditioning map, projected by a 1×1 convolution at its own (coarse) resolution and resized
    bilinearly, is added to the hidden state, so the skips carry it to the decoder — and
    *bottleneck cross-attention* — bottleneck positions query the pooled conditioning tokens.
    Works for any ``H, W`` divisible by ``2^(levels − 1)``; no layer depends on the map size.
    """

    def __init__(
        self, cfg: ModelConfig, n_genes: int, cond_channels: int, extra_in: int = 0
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_genes = n_genes
        base = cfg.base_channels
        emb = cfg.time_embed_mult * base
        self.time_embed = TimestepEmbedding(base, emb)
        # the mean pass (model.mean_head) replaces the time embedding by this learned vector
        self.mean_embed = nn.Parameter(torch.zeros(emb)) if cfg.mean_head else None
        self.input_conv = nn.Conv2d(n_genes + extra_in, base, 3, padding=1)
        widths = [base * m for m in cfg.channel_mult]
        skips, ch = [base], base
        self.cond_proj = nn.ModuleList()
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, width in enumerate(widths):
            attn = 2**level in cfg.attention_resolutions
            self.cond_proj.append(nn.Conv2d(cond_channels, ch, 1))
            ins = [ch] + [width] * (cfg.num_res_blocks - 1)
            self.down.append(_Level(ins, width, emb, cfg, attn))
            ch = width
            skips += [width] * cfg.num_res_blocks
            if level < len(widths) - 1:
                self.downsample.append(Downsample(ch))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb, dropout=cfg.dropout, groups=cfg.norm_groups)
        self.mid_cross = CrossAttention(ch, cond_channels, cfg.num_heads)
        self.mid2 = ResBlock(ch, ch, emb, dropout=cfg.dropout, groups=cfg.norm_groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            ins = []
            for _ in range(cfg.num_res_blocks + 1):
                ins.append(ch + skips.pop())
                ch = width
            self.up.append(_Level(ins, width, emb, cfg, 2**level in cfg.attention_resolutions))
            if level > 0:
                self.upsample.append(Upsample(ch))
        self.out_norm = group_norm(ch, cfg.norm_groups)
        self.out_conv = nn.Conv2d(ch, n_genes * (2 if cfg.learn_sigma else 1), 3, padding=1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond_features: torch.Tensor,
        cond_tokens: torch.Tensor,
        *,
        mean_mode: bool = False,
    ) -> DenoiserOutput:
        """Predict the noise (or v) and the variance interpolation.

        Parameters
        ----------
        x
            ``[B, G (+ G), H, W]`` noisy HR map ``x_t`` (with the upsampled LR map appended).
        t
            ``[B]`` integer timesteps.
        cond_features
            ``[B, C_c, g, g]`` conditioning map.
        cond_tokens
            ``[B, T, C_c]`` pooled conditioning tokens (row-major on a square grid).
        mean_mode
            The mean pass of ``model.mean_head``: the learned mode embedding replaces the time
            embedding (``t`` is ignored) and the output's first G channels are the regression.
        """
        factor = self.cfg.downsampling
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"x_t: H and W must be divisible by {factor}, got {tuple(x.shape)}")
        if mean_mode:
            if self.mean_embed is None:
                raise ValueError("mean_mode needs a network built with model.mean_head")
            # a copy per sample, not a view: a view of the parameter made under no_grad would
            # still claim requires_grad (without a grad_fn), which FlopCounterMode rejects
            emb = self.mean_embed.to(x.dtype).repeat(x.shape[0], 1)
        else:
            emb = self.time_embed(t)
        h = self.input_conv(x)
        hs = [h]
        for level, stage in enumerate(self.down):
            assert isinstance(stage, _Level)
            h = h + resize_to(self.cond_proj[level](cond_features), tuple(h.shape[-2:]))
            for block, attn in zip(stage.blocks, stage.attn, strict=True):
                h = self._segment(block, attn, h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        h = self._middle(h, emb, cond_tokens)
        for i, stage in enumerate(self.up):
            assert isinstance(stage, _Level)
            for block, attn in zip(stage.blocks, stage.attn, strict=True):
                h = self._segment(block, attn, h, emb, hs.pop())
            if i < len(self.upsample):
                size = (hs[-1].shape[-2], hs[-1].shape[-1])
                h = recomputed(self._checkpointing, self.upsample[i], h, size)
        out = recomputed(self._checkpointing, self._head, h)
        if self.cfg.learn_sigma:
            pred, var = out.chunk(2, dim=1)
            return DenoiserOutput(pred, var)
        return DenoiserOutput(out, None)

    @property
    def _checkpointing(self) -> bool:
        """``model.gradient_checkpointing`` in training mode."""
        return self.cfg.gradient_checkpointing and self.training

    def _segment(
        self,
        block: nn.Module,
        attn: nn.Module,
        h: torch.Tensor,
        emb: torch.Tensor,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A residual block (its input concatenated with a decoder skip) and its attention.

        With gradient checkpointing only ``h`` and ``skip`` are kept for backward: the
        concatenation and everything inside the block are recomputed there.
        """

        def run(h: torch.Tensor, emb: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
            x = h if skip is None else torch.cat([h, skip], dim=1)
            return attn(block(x, emb))

        out = recomputed(self._checkpointing, run, h, emb, skip)
        assert isinstance(out, torch.Tensor)
        return out

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.out_conv(F.silu(self.out_norm(h)))

    def _middle(self, h: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h = self.mid1(h, emb)
        b, c, hh, ww = h.shape
        side = math.isqrt(tokens.shape[1])
        query = h.flatten(2).transpose(1, 2)
        q_pos = grid_position_encoding(hh, ww, c, device=h.device).to(h.dtype)
        k_pos = grid_position_encoding(side, side, tokens.shape[2], device=h.device)
        attended = self.mid_cross(query, tokens, query_pos=q_pos, context_pos=k_pos.to(h.dtype))
        h = h + attended.transpose(1, 2).reshape(b, c, hh, ww)
        return self.mid2(h, emb)
