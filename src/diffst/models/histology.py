"""Hierarchical histology encoder: tissue view, cell tiles, dynamic cross-attention, curriculum."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffst.models.backbones import ExternalBackbone, build_backbone
from diffst.models.blocks import CrossAttention, ResBlock, grid_position_encoding, resize_to
from diffst.models.config import ModelConfig

__all__ = ["CellEncoder", "HRImageEncoder", "HistologyEncoder", "TissueEncoder", "tile_mosaic"]


def _conv_stages(width: int, n_down: int, groups: int) -> nn.Sequential:
    """``n_down`` × (strided conv + residual block): halves the side each time."""
    layers: list[nn.Module] = []
    for _ in range(n_down):
        layers += [
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            ResBlock(width, width, groups=groups),
        ]
    return nn.Sequential(*layers)


def _feature_extractor(
    in_channels: int, *, width: int, n_down: int, groups: int, backbone: ExternalBackbone | None
) -> tuple[nn.Module, int]:
    """The built-in CNN (stem + ``n_down`` strided stages) or ``backbone``, and its channels."""
    if backbone is None:
        stem = nn.Conv2d(in_channels, width, 3, padding=1)
        return nn.Sequential(stem, _conv_stages(width, n_down, groups)), width
    return backbone, backbone.out_channels


class TissueEncoder(nn.Module):
    """Tissue-level view ``[B, C, S, S]`` → feature grid ``[B, D, g, g]``.

    Built-in: a CNN with ``log2(S / g)`` strided stages, then area pooling/resizing to exactly
    ``g``. With an external backbone: its last feature map, projected by a 1×1 convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        n_down: int,
        groups: int,
        backbone: ExternalBackbone | None,
    ) -> None:
        super().__init__()
        self.features, feat_channels = _feature_extractor(
            in_channels, width=width, n_down=n_down, groups=groups, backbone=backbone
        )
        self.out = nn.Conv2d(feat_channels, out_channels, 1)

    def forward(self, tissue: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return resize_to(self.out(self.features(tissue)), grid)


class CellEncoder(nn.Module):
    """Cell tiles ``[M, C, t, t]`` (all tiles of all samples) → tokens ``[M, D]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        n_down: int,
        groups: int,
        backbone: ExternalBackbone | None,
    ) -> None:
        super().__init__()
        self.features, feat_channels = _feature_extractor(
            in_channels, width=width, n_down=n_down, groups=groups, backbone=backbone
        )
        self.out = nn.Linear(feat_channels, out_channels)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.features(tiles).mean(dim=(2, 3))))


def tile_mosaic(cells: torch.Tensor) -> torch.Tensor:
    """Cell tiles ``[B, n², C, t, t]`` (row-major on the n × n grid) → the patch image
    ``[B, C, n·t, n·t]`` they were cut from."""
    b, n_tiles, c, t, _ = cells.shape
    n = math.isqrt(n_tiles)
    if n * n != n_tiles:
        raise ValueError(f"cells: N = {n_tiles} tiles do not form a square grid")
    return cells.reshape(b, n, n, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * t, n * t)


class HRImageEncoder(nn.Module):
    """Image features on the HR grid: ``[B, C, S', S']`` patch image → ``[B, D, H, W]``.

    A strided stem and two residual blocks at half the image's resolution, area-pooled onto the
    HR bins (each bin's feature is the mean over the image pixels it covers) and projected by a
    1×1 convolution. Fed to the UNet input beside ``x_t``, it gives every HR bin the look of its
    own piece of tissue, which the bottleneck-resolution conditioning map cannot.
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int, groups: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(
            ResBlock(width, width, groups=groups), ResBlock(width, width, groups=groups)
        )
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        feat = self.blocks(self.stem(image))
        return self.out(F.silu(F.adaptive_avg_pool2d(feat, size)))


class HistologyEncoder(nn.Module):
    """Tissue features refined by dynamic cross-attention to the most informative cell tiles.

    Tissue positions are queries, cell-tile tokens keys/values (both carry a 2-D position code of
    their place in the patch); ``out = (1 − w)·tissue + w·attended`` (release ``w = 0.1``).
    Tiles are ranked by ``cell_score`` (entropy); during training only the top share given by the
    curriculum (:meth:`set_training_progress`) is encoded; in eval mode the final share is used.
    """

    def __init__(self, cfg: ModelConfig, image_channels: int, out_channels: int, grid: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.progress = 0.0
        backbone = build_backbone(
            cfg.backbone,
            weights=cfg.backbone_weights,
            in_channels=image_channels,
            probe_size=cfg.cell_tile_size,
            trainable=cfg.backbone_trainable,
        )
        width, groups = cfg.histology_channels, cfg.norm_groups
        n_down = max(0, round(math.log2(max(cfg.tissue_size / grid, 1.0))))
        self.tissue = TissueEncoder(
            image_channels,
            out_channels,
            width=width,
            n_down=n_down,
            groups=groups,
            backbone=backbone,
        )
        self.cells: CellEncoder | None = None
        self.attention: CrossAttention | None = None
        if cfg.use_cross_attention:
            tile_down = min(2, int(math.log2(cfg.cell_tile_size)))
            self.cells = CellEncoder(
                image_channels,
                out_channels,
                width=width,
                n_down=tile_down,
                groups=groups,
                backbone=backbone,
            )
            self.attention = CrossAttention(out_channels, out_channels, cfg.num_heads)

    def set_training_progress(self, frac: float) -> None:
        """Set the training progress ``frac`` ∈ [0, 1] that selects the curriculum share."""
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"training progress must lie in [0, 1], got {frac}")
        self.progress = float(frac)

    def n_tiles_used(self, n_tiles: int) -> int:
        """Number of top-ranked tiles encoded out of ``n_tiles`` in the current mode."""
        share = (
            self.cfg.curriculum_share(self.progress)
            if self.training
            else self.cfg.curriculum_shares[-1]
        )
        return max(1, min(n_tiles, math.ceil(share * n_tiles - 1e-9)))

    def forward(
        self,
        tissue: torch.Tensor,
        cells: torch.Tensor | None,
        cell_score: torch.Tensor | None,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """Encode the histology of a batch.

        Parameters
        ----------
        tissue
            ``[B, C, S, S]`` tissue-level view, values in [0, 1].
        cells
            ``[B, N, C, t, t]`` cell tiles (row-major on an ``n × n`` grid, ``N = n²``); ignored
            without cross-attention.
        cell_score
            ``[B, N]`` tile information content (entropy, bits) used for ranking.
        grid
            Side lengths of the output feature grid.

        Returns
        -------
        torch.Tensor
            ``[B, D, *grid]`` image features.
        """
        feat = self.tissue(tissue, grid)
        if self.cells is None or self.attention is None:
            return feat
        if cells is None:
            raise ValueError("cells: [B, N, C, t, t] tiles are needed with cross-attention on")
        b, n_tiles = cells.shape[:2]
        side = math.isqrt(n_tiles)
        if side * side != n_tiles:
            raise ValueError(f"cells: N = {n_tiles} tiles do not form a square grid")
        dim = feat.shape[1]
        tile_pos = grid_position_encoding(side, side, dim, device=feat.device).to(feat.dtype)
        k = self.n_tiles_used(n_tiles)
        if k < n_tiles:
            if cell_score is None or cell_score.shape != (b, n_tiles):
                raise ValueError(f"cell_score: [B, N] = [{b}, {n_tiles}] needed to rank tiles")
            idx = cell_score.topk(k, dim=1).indices
            cells = cells[torch.arange(b, device=idx.device)[:, None], idx]
            context_pos = tile_pos[idx]
        else:
            context_pos = tile_pos.expand(b, -1, -1)
        tokens = self.cells(cells.flatten(0, 1)).reshape(b, k, dim)
        query = feat.flatten(2).transpose(1, 2)
        query_pos = grid_position_encoding(*grid, dim, device=feat.device).to(feat.dtype)
        attended = self.attention(query, tokens, query_pos=query_pos, context_pos=context_pos)
        w = self.cfg.cross_attention_residual
        mixed = (1.0 - w) * query + w * attended
        return mixed.transpose(1, 2).reshape(feat.shape)
