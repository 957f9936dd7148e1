"""LR expression encoder with a gene-correlation graph convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffst.models.blocks import ResBlock, group_norm, resize_to

__all__ = ["GeneGraphConv", "LREncoder"]


class GeneGraphConv(nn.Module):
    """Graph convolution over genes with a fixed adjacency and learnable spatial mixing.

    Genes are the nodes; a gene's LR map is its node signal. Messages are mixed over genes with
    the fixed row-normalised adjacency ``A`` (a buffer), then over LR positions by a learnable
    per-gene convolution, and the result is blended with the input:
    ``out = (1 − w)·x + w·SiLU(mix(A·x))`` (paper release: ``w = 0.02``).
    """

    def __init__(self, adjacency: torch.Tensor, *, residual: float, kernel: int) -> None:
        super().__init__()
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"adjacency: [G, G] needed, got shape {tuple(adjacency.shape)}")
        n_genes = adjacency.shape[0]
        self.register_buffer("adjacency", adjacency.detach().float().clone())
        self.residual = residual
        self.spatial_mix = nn.Conv2d(n_genes, n_genes, kernel, padding=kernel // 2, groups=n_genes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, G, h, w] → [B, G, h, w]``."""
        adj = self.adjacency.to(x.dtype)
        messages = torch.einsum("gk,bkhw->bghw", adj, x)
        graph = F.silu(self.spatial_mix(messages))
        return (1.0 - self.residual) * x + self.residual * graph


class LREncoder(nn.Module):
    """LR expression map → conditioning feature map.

    ``lr [B, G, h, w]`` (any LR size) → optional :class:`GeneGraphConv` → convolutional encoder
    at the LR grid → ``[B, out_channels, g, g]`` resized to the conditioning grid ``g``.
    Without a graph (ablation) the LR map enters the convolutional encoder unchanged.
    """

    def __init__(
        self,
        n_genes: int,
        out_channels: int,
        adjacency: torch.Tensor | None,
        *,
        hidden: int,
        residual: float,
        kernel: int,
        groups: int,
    ) -> None:
        super().__init__()
        if adjacency is not None and adjacency.shape[0] != n_genes:
            raise ValueError(
                f"adjacency: shape {tuple(adjacency.shape)} does not match {n_genes} genes"
            )
        self.graph = (
            GeneGraphConv(adjacency, residual=residual, kernel=kernel)
            if adjacency is not None
            else None
        )
        self.stem = nn.Conv2d(n_genes, hidden, 3, padding=1)
        self.block = ResBlock(hidden, hidden, groups=groups)
        self.norm = group_norm(hidden, groups)
        self.out = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, lr: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``[B, G, h, w] → [B, out_channels, *grid]``."""
        x = self.graph(lr) if self.graph is not None else lr
        h = self.block(self.stem(x))
        return resize_to(self.out(F.silu(self.norm(h))), grid)
