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

    def __init__(
        self, adjacency: torch.Tensor, *, residual: float, kernel: int, learned_gate: bool = False
    ) -> None:
        super().__init__()
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"adjacency: [G, G] needed, got shape {tuple(adjacency.shape)}")
        n_genes = adjacency.shape[0]
        self.register_buffer("adjacency", adjacency.detach().float().clone())
        self.residual = residual
        self.spatial_mix = nn.Conv2d(n_genes, n_genes, kernel, padding=kernel // 2, groups=n_genes)
        # learned: w_g = sigmoid(a_g), a_g = 0 at the start (w = ½): how much of each gene's
        # encoded map comes from its co-expressed genes is fitted, not fixed at 0.02
        self.gate = nn.Parameter(torch.zeros(n_genes)) if learned_gate else None
        self.n_genes = n_genes

    def weight(self) -> torch.Tensor:
        """``[G]`` share of each gene's output that comes from the graph (``w``)."""
        if self.gate is None:
            return torch.full((self.n_genes,), float(self.residual))
        return torch.sigmoid(self.gate.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, G, h, w] → [B, G, h, w]``."""
        adj = self.adjacency.to(x.dtype)
        messages = torch.einsum("gk,bkhw->bghw", adj, x)
        graph = F.silu(self.spatial_mix(messages))
        if self.gate is None:
            return (1.0 - self.residual) * x + self.residual * graph
        w = torch.sigmoid(self.gate).to(x.dtype)[None, :, None, None]
        return (1.0 - w) * x + w * graph


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
        learned_gate: bool = False,
        extra_in: int = 0,
    ) -> None:
        super().__init__()
        if adjacency is not None and adjacency.shape[0] != n_genes:
            raise ValueError(
                f"adjacency: shape {tuple(adjacency.shape)} does not match {n_genes} genes"
            )
        self.graph = (
            GeneGraphConv(adjacency, residual=residual, kernel=kernel, learned_gate=learned_gate)
            if adjacency is not None
            else None
        )
        self.stem = nn.Conv2d(n_genes + extra_in, hidden, 3, padding=1)
        self.block = ResBlock(hidden, hidden, groups=groups)
        self.norm = group_norm(hidden, groups)
        self.out = nn.Conv2d(hidden, out_channels, 1)

    def forward(
        self, lr: torch.Tensor, grid: tuple[int, int], extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, G, h, w] → [B, out_channels, *grid]``; ``extra [B, E, h, w]`` (e.g. the LR
        mask) joins the genes after the graph."""
        x = self.graph(lr) if self.graph is not None else lr
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        h = self.block(self.stem(x))
        return resize_to(self.out(F.silu(self.norm(h))), grid)
