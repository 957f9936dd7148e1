"""Multi-modal disentangling network and cross-modal adaptive modulation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffst.models.blocks import group_norm

__all__ = [
    "CrossModalModulation",
    "FusionOutput",
    "MultiModalFusion",
    "cosine_disentangle_loss",
    "disentangle_loss",
]


@dataclass
class FusionOutput:
    """Fused conditioning of one batch."""

    features: torch.Tensor
    """``[B, C_f, g, g]`` conditioning map (``C_f`` = :attr:`MultiModalFusion.out_channels`)."""
    disentangle_loss: torch.Tensor
    """Scalar float32 disentangling loss (0 when disentangling is off)."""


def disentangle_loss(
    common_img: torch.Tensor,
    common_expr: torch.Tensor,
    distinct_img: torch.Tensor,
    distinct_expr: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``MSE(common_img, common_expr) / (MSE(distinct_img, distinct_expr) + eps)``, float32.

    Small when the common parts agree and the modality-specific parts differ.
    """
    num = F.mse_loss(common_img.float(), common_expr.float())
    den = F.mse_loss(distinct_img.float(), distinct_expr.float())
    return num / (den + eps)


def cosine_disentangle_loss(
    common_img: torch.Tensor,
    common_expr: torch.Tensor,
    distinct_img: torch.Tensor,
    distinct_expr: torch.Tensor,
) -> torch.Tensor:
    """Scale-free disentangling: ``mean(1 − cos(common)) + mean(max(cos(distinct), 0))``.

    Cosines are taken per position over channels, so no term can be lowered by inflating or
    shrinking features (the MSE ratio of the paper falls to 0 as the distinct parts grow);
    the common parts are pulled to the same direction and the distinct parts pushed to be at
    least orthogonal. In [0, 3]; float32.
    """
    cos_common = F.cosine_similarity(common_img.float(), common_expr.float(), dim=1, eps=1e-6)
    cos_distinct = F.cosine_similarity(distinct_img.float(), distinct_expr.float(), dim=1, eps=1e-6)
    return (1.0 - cos_common).mean() + cos_distinct.clamp(min=0.0).mean()


class CrossModalModulation(nn.Module):
    """Adaptive modulation of a target modality by a source modality within local windows.

    For every position ``p`` the affinity ``⟨q_p, k_r⟩ / √C`` between the target's query and the
    source's keys at the positions ``r`` of the ``k × k`` window around ``p`` is softmax-normalised
    (positions outside the map excluded); the weighted source features give a per-position scale
    and shift: ``out = target·(1 + γ) + β``. Shapes ``[B, C, g, g]`` in and out.
    """

    def __init__(self, channels: int, window: int, groups: int) -> None:
        super().__init__()
        self.window = window
        self.norm_target = group_norm(channels, groups)
        self.norm_source = group_norm(channels, groups)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(channels, channels, 1)
        self.to_v = nn.Conv2d(channels, channels, 1)
        self.to_scale_shift = nn.Conv2d(channels, 2 * channels, 1)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w] → [B, C, k², h·w]`` (zero padded)."""
        b, c = x.shape[:2]
        cols = F.unfold(x, self.window, padding=self.window // 2)
        return cols.reshape(b, c, self.window * self.window, -1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b, c, h, w = target.shape
        src = self.norm_source(source)
        q = self.to_q(self.norm_target(target)).reshape(b, c, 1, h * w)
        k_win = self._windows(self.to_k(src))
        v_win = self._windows(self.to_v(src))
        affinity = (q * k_win).sum(dim=1) / math.sqrt(c)
        inside = self._windows(torch.ones(1, 1, h, w, device=target.device, dtype=target.dtype))
        affinity = affinity.masked_fill(inside[:, 0] == 0, float("-inf"))
        weights = affinity.float().softmax(dim=1).to(v_win.dtype)
        aggregated = (weights[:, None] * v_win).sum(dim=2).reshape(b, c, h, w)
        scale, shift = self.to_scale_shift(aggregated).chunk(2, dim=1)
        return target * (1 + scale) + shift


class MultiModalFusion(nn.Module):
    """Fuse image and LR-expression feature maps into one conditioning map.

    With disentangling, shared convolutions split each modality into a common and a distinct
    part; the common parts are averaged; the distinct parts are modulated by each other
    (:class:`CrossModalModulation`, if on); output ``[common, image, expression]`` (``3C``
    channels). Without disentangling, the (optionally modulated) features are concatenated and
    projected by a 1×1 convolution (``2C`` channels).
    """

    def __init__(
        self,
        channels: int,
        *,
        use_disentangle: bool,
        use_modulation: bool,
        window: int,
        eps: float,
        groups: int,
        loss_kind: str = "ratio",
    ) -> None:
        super().__init__()
        self.eps = eps
        self.loss_kind = loss_kind
        self.common: nn.Module | None = None
        self.distinct: nn.Module | None = None
        self.project: nn.Module | None = None
        if use_disentangle:
            self.common = self._splitter(channels, groups)
            self.distinct = self._splitter(channels, groups)
            self.out_channels = 3 * channels
        else:
            self.project = nn.Conv2d(2 * channels, 2 * channels, 1)
            self.out_channels = 2 * channels
        self.modulate_img: CrossModalModulation | None = None
        self.modulate_expr: CrossModalModulation | None = None
        if use_modulation:
            self.modulate_img = CrossModalModulation(channels, window, groups)
            self.modulate_expr = CrossModalModulation(channels, window, groups)

    @staticmethod
    def _splitter(channels: int, groups: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, img: torch.Tensor, expr: torch.Tensor) -> FusionOutput:
        """``img, expr [B, C, g, g]`` → :class:`FusionOutput`."""
        loss = torch.zeros((), device=img.device, dtype=torch.float32)
        common = None
        if self.common is not None and self.distinct is not None:
            c_img, c_expr = self.common(img), self.common(expr)
            img, expr = self.distinct(img), self.distinct(expr)
            loss = (
                cosine_disentangle_loss(c_img, c_expr, img, expr)
                if self.loss_kind == "cosine"
                else disentangle_loss(c_img, c_expr, img, expr, self.eps)
            )
            common = 0.5 * (c_img + c_expr)
        if self.modulate_img is not None and self.modulate_expr is not None:
            img, expr = self.modulate_img(img, expr), self.modulate_expr(expr, img)
        if common is not None:
            return FusionOutput(torch.cat([common, img, expr], dim=1), loss)
        assert self.project is not None
        return FusionOutput(self.project(torch.cat([img, expr], dim=1)), loss)
