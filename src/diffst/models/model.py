"""The Diff-ST network: condition encoders, multi-modal fusion and the conditional UNet."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from diffst.config import ConfigError
from diffst.models.blocks import recomputed
from diffst.models.config import ModelConfig
from diffst.models.denoiser import ConditionalUNet, DenoiserOutput
from diffst.models.fusion import MultiModalFusion
from diffst.models.gene_graph import LREncoder
from diffst.models.histology import HistologyEncoder, HRImageEncoder, tile_mosaic

__all__ = ["CPU_CHUNK_BYTES", "Condition", "DiffSTModel", "count_parameters", "cpu_chunk_patches"]

#: on a CPU the UNet runs a batch in chunks of patches whose widest activation
#: (``base_channels × H × W`` fp32 values each) fits this many bytes: its patches never mix, and
#: one paper-sized patch at a time is faster and far smaller than many (BENCHMARKS.md)
CPU_CHUNK_BYTES = 4 << 20


def cpu_chunk_patches(base_channels: int, height: int, width: int, batch: int) -> int:
    """Patches per UNet pass on a CPU: the most whose widest activation fits
    :data:`CPU_CHUNK_BYTES`, at least 1 and at most ``batch``."""
    per_patch = 4 * base_channels * height * width
    return max(1, min(batch, CPU_CHUNK_BYTES // per_patch))


@dataclass
class Condition:
    """Encoded conditioning of a batch, computed once per sample and reused at every step."""

    features: torch.Tensor
    """``[B, C_c, g, g]`` fused conditioning map on the bottleneck grid ``g = H / 2^(L−1)``."""
    tokens: torch.Tensor
    """``[B, T, C_c]`` conditioning pooled to at most ``cond_token_grid²`` tokens."""
    disentangle_loss: torch.Tensor
    """Scalar float32 disentangling loss of the batch (0 when disentangling is off)."""
    lr_up: torch.Tensor | None = None
    """``[B, G, H, W]`` LR map upsampled to the HR grid (nearest, exact cell footprint), or None."""
    hr_image: torch.Tensor | None = None
    """``[B, D, H, W]`` image features on the HR grid (``model.hr_image_channels``), or None."""
    lr_mask_up: torch.Tensor | None = None
    """``[B, 1, H, W]`` 1 where the LR cell above a bin was measured (``model.lr_mask_input``)."""
    mean: torch.Tensor | None = None
    """``[B, G, H, W]`` the network's regression of the normalised HR map from the condition
    alone (``model.mean_head``; keeps its autograd graph for the mean loss), or None."""

    @property
    def batch_size(self) -> int:
        """Number of samples ``B``."""
        return int(self.features.shape[0])

    def repeat(self, k: int) -> Condition:
        """Each sample repeated ``k`` times in a row: ``[B, …] → [B·k, …]`` (for K draws)."""

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat_interleave(k, dim=0)

        return replace(
            self,
            features=self.features.repeat_interleave(k, dim=0),
            tokens=self.tokens.repeat_interleave(k, dim=0),
            lr_up=rep(self.lr_up),
            hr_image=rep(self.hr_image),
            lr_mask_up=rep(self.lr_mask_up),
            mean=rep(self.mean),
        )

    def select(self, index: torch.Tensor | slice | list[int]) -> Condition:
        """The samples at ``index`` (a slice, index list or boolean/integer tensor)."""

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[index]

        return replace(
            self, features=self.features[index], tokens=self.tokens[index], lr_up=pick(self.lr_up),
            hr_image=pick(self.hr_image), lr_mask_up=pick(self.lr_mask_up), mean=pick(self.mean),
        )  # fmt: skip

    def detach(self) -> Condition:
        """A copy cut from the autograd graph (for sampling)."""

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.detach()

        return Condition(
            self.features.detach(), self.tokens.detach(), self.disentangle_loss.detach(),
            cut(self.lr_up), cut(self.hr_image), cut(self.lr_mask_up), cut(self.mean),
        )  # fmt: skip


class DiffSTModel(nn.Module):
    """Cross-modal conditional denoiser of Diff-ST.

    Parameters
    ----------
    cfg
        Model configuration (ablation switches included).
    n_genes
        ``G``, channels of the HR and LR maps.
    image_channels
        ``C`` of the tissue view and cell tiles (3 for H&E, 2 for DAPI + polyT).
    lr_size
        Side of the LR grid (LR cells) used in training; any LR size works at run time.
    hr_size
        Side of the HR patch (HR bins); must be divisible by ``2^(len(channel_mult) − 1)``.
    adjacency
        ``[G, G]`` row-normalised gene adjacency (needed with the LR branch and graph on).
    lr_factor
        HR bins per LR cell side, for the input concatenation of the upsampled LR map;
        default ``ceil(hr_size / lr_size)`` (exact for ``lr_size = ceil(hr_size / factor)``).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        n_genes: int,
        image_channels: int,
        lr_size: int,
        hr_size: int,
        adjacency: torch.Tensor | None = None,
        lr_factor: int | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(cfg, n_genes, image_channels, lr_size, hr_size)
        if cfg.use_lr and cfg.use_graph and adjacency is None:
            raise ConfigError("model.use_graph: the gene graph needs an adjacency [G, G] tensor")
        self.cfg = cfg
        self.n_genes, self.image_channels = n_genes, image_channels
        self.lr_size, self.hr_size = lr_size, hr_size
        self.lr_factor = lr_factor or -(-hr_size // lr_size)
        self.concat_lr = cfg.use_lr and cfg.lr_input_concat
        self.grid = hr_size // cfg.downsampling
        self.token_grid = min(cfg.cond_token_grid, self.grid)
        width = cfg.cond_channels
        self.lr_encoder: LREncoder | None = None
        self.histology: HistologyEncoder | None = None
        self.fusion: MultiModalFusion | None = None
        if cfg.use_lr:
            self.lr_encoder = LREncoder(
                n_genes,
                width,
                adjacency if cfg.use_graph else None,
                hidden=cfg.lr_hidden_channels,
                residual=cfg.graph_residual,
                kernel=cfg.graph_kernel,
                groups=cfg.norm_groups,
                learned_gate=cfg.graph_gate == "learned",
                extra_in=int(cfg.lr_mask_input),
            )
        if cfg.use_histology:
            self.histology = HistologyEncoder(cfg, image_channels, width, self.grid)
        cond_channels = width
        if cfg.use_lr and cfg.use_histology:
            self.fusion = MultiModalFusion(
                width,
                use_disentangle=cfg.use_disentangle,
                use_modulation=cfg.use_modulation,
                window=cfg.modulation_window,
                eps=cfg.disentangle_eps,
                groups=cfg.norm_groups,
                loss_kind=cfg.disentangle_kind,
            )
            cond_channels = self.fusion.out_channels
        self.hr_image: HRImageEncoder | None = None
        if cfg.use_histology and cfg.hr_image_channels > 0:
            self.hr_image = HRImageEncoder(
                image_channels, cfg.hr_image_channels, width=cfg.hr_image_width,
                groups=cfg.norm_groups,
            )  # fmt: skip
        self.mask_input = cfg.use_lr and cfg.lr_mask_input
        extra = (n_genes + int(self.mask_input)) * self.concat_lr
        extra += cfg.hr_image_channels if self.hr_image else 0
        extra += n_genes if cfg.mean_head else 0
        self.denoiser = ConditionalUNet(cfg, n_genes, cond_channels, extra_in=extra)

    def set_training_progress(self, frac: float) -> None:
        """Training progress ``frac`` ∈ [0, 1]; selects the share of cell tiles used."""
        if self.histology is not None:
            self.histology.set_training_progress(frac)

    def encode_condition(
        self,
        lr: torch.Tensor | None = None,
        tissue: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
        cell_score: torch.Tensor | None = None,
        lr_mask: torch.Tensor | None = None,
        *,
        mean_pass: bool = True,
    ) -> Condition:
        """Encode the conditioning inputs of a batch.

        Parameters
        ----------
        lr
            ``[B, G, h, w]`` normalised LR map (ignored without the LR branch).
        tissue
            ``[B, C, S, S]`` tissue view in [0, 1] (ignored without the histology branch).
        cells
            ``[B, N, C, t, t]`` cell tiles in [0, 1] (used with dynamic cross-attention).
        cell_score
            ``[B, N]`` tile entropy (bits) ranking the tiles for the curriculum.
        lr_mask
            ``[B, 1, h, w]`` (or ``[B, h, w]``) 1 where an LR cell holds a measurement; read with
            ``model.lr_mask_input`` (default: every cell measured).
        mean_pass
            With ``model.mean_head``, run the mean pass into ``Condition.mean`` (False leaves it
            None, for a caller that runs :meth:`mean_pass` itself, e.g. on chunks of the batch).
        """
        grid = (self.grid, self.grid)
        # model.gradient_checkpointing: the image encoders and the fusion are recomputed in
        # backward too (the built-in CNNs only: an external backbone may update BatchNorm buffers)
        recompute = self.cfg.gradient_checkpointing and self.training
        mask = None
        if self.mask_input and lr is not None:
            mask = (
                torch.ones_like(lr[:, :1])
                if lr_mask is None
                else lr_mask.reshape(lr.shape[0], 1, *lr.shape[-2:]).to(lr.dtype)
            )
        expr = img = None
        if self.lr_encoder is not None:
            if lr is None or lr.ndim != 4 or lr.shape[1] != self.n_genes:
                got = None if lr is None else tuple(lr.shape)
                raise ValueError(f"lr: [B, {self.n_genes}, h, w] needed, got {got}")
            expr = self.lr_encoder(lr, grid, mask)
        if self.histology is not None:
            if tissue is None or tissue.ndim != 4 or tissue.shape[1] != self.image_channels:
                got = None if tissue is None else tuple(tissue.shape)
                raise ValueError(f"tissue: [B, {self.image_channels}, S, S] needed, got {got}")
            builtin = self.cfg.backbone == "builtin"
            img = recomputed(recompute and builtin, self.histology, tissue, cells, cell_score, grid)
        if self.fusion is not None and img is not None and expr is not None:
            fused = recomputed(recompute, self.fusion, img, expr)
            features, loss = fused.features, fused.disentangle_loss
        else:
            features = expr if expr is not None else img
            assert features is not None
            loss = torch.zeros((), device=features.device, dtype=torch.float32)
        pooled = F.adaptive_avg_pool2d(features, self.token_grid)
        lr_up = self._upsample_lr(lr) if self.concat_lr and lr is not None else None
        mask_up = None
        if lr_up is not None and mask is not None:
            f = self.lr_factor
            mask_up = mask.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        hr_image = None
        if self.hr_image is not None:
            assert tissue is not None
            image = tile_mosaic(cells) if cells is not None else tissue
            hr_image = recomputed(recompute, self.hr_image, image, (self.hr_size, self.hr_size))
        cond = Condition(
            features, pooled.flatten(2).transpose(1, 2), loss, lr_up, hr_image, mask_up
        )
        if self.cfg.mean_head and mean_pass:
            cond.mean = self.mean_pass(cond)
        return cond

    def mean_pass(self, cond: Condition) -> torch.Tensor:
        """``[B, G, H, W]`` regression of the normalised HR map from the condition alone.

        The UNet of ``model.mean_head`` run once with ``x = 0`` (and a zero mean input) in its
        mean mode (a learned embedding in place of the time embedding): a direct regressor that
        shares every encoder and weight with the denoiser.
        """
        shape = (cond.batch_size, self.n_genes, self.hr_size, self.hr_size)
        zeros = cond.features.new_zeros(shape)
        return self(zeros, None, replace(cond, mean=None), mean_mode=True).prediction

    def _upsample_lr(self, lr: torch.Tensor) -> torch.Tensor:
        """``[B, G, h, w] → [B, G, h·f, w·f]`` on the normalised scale.

        ``nearest``: each LR cell copied onto its f×f HR bins. ``bicubic``: cubic convolution
        between cell centres (``align_corners=False`` puts cell centres on the centres of their
        f×f blocks; edges replicate), clamped to ≥ −1, the normalised value of zero counts.
        """
        f = self.lr_factor
        if self.cfg.lr_upsample == "bicubic":
            up = F.interpolate(lr, scale_factor=f, mode="bicubic", align_corners=False)
            return up.clamp(min=-1.0)
        return lr.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | None,
        cond: Condition,
        *,
        mean_mode: bool = False,
    ) -> DenoiserOutput:
        """Denoise ``x_t [B, G, H, W]`` at timesteps ``t [B]`` given an encoded condition.

        With ``model.mean_head`` the denoiser also reads ``cond.mean`` (cut from the autograd
        graph; zeros while it is being computed, ``mean_mode``, where ``t`` is ignored). Without
        autograd on a CPU the batch runs in chunks of :func:`cpu_chunk_patches` patches.
        """
        if cond.batch_size != x_t.shape[0]:
            raise ValueError(
                f"cond: batch of {cond.batch_size} does not match x_t batch {x_t.shape[0]}"
            )
        batch, (h, w) = x_t.shape[0], x_t.shape[-2:]
        chunk = batch
        if x_t.device.type == "cpu" and not torch.is_grad_enabled():
            chunk = cpu_chunk_patches(self.cfg.base_channels, h, w, batch)
        if chunk < batch:  # inference on a CPU: the same values, a chunk of patches at a time
            parts = []
            for i in range(0, batch, chunk):
                part = slice(i, i + chunk)
                t_part = None if t is None else t[part]
                parts.append(self._denoise(x_t[part], t_part, cond.select(part), mean_mode))
            variance = None
            if parts[0].variance is not None:
                variance = torch.cat([part.variance for part in parts if part.variance is not None])
            return DenoiserOutput(torch.cat([part.prediction for part in parts]), variance)
        return self._denoise(x_t, t, cond, mean_mode)

    def _denoise(
        self, x_t: torch.Tensor, t: torch.Tensor | None, cond: Condition, mean_mode: bool
    ) -> DenoiserOutput:
        if cond.lr_up is not None:
            h, w = x_t.shape[-2:]
            if cond.lr_up.shape[-2] < h or cond.lr_up.shape[-1] < w:
                raise ValueError(
                    f"lr: upsampled LR {tuple(cond.lr_up.shape[-2:])} does not cover x_t {(h, w)}; "
                    f"lr_factor {self.lr_factor} is wrong for this LR size"
                )
            x_t = torch.cat([x_t, cond.lr_up[..., :h, :w].to(x_t.dtype)], dim=1)
        h, w = x_t.shape[-2:]
        mean = None
        if self.cfg.mean_head:  # the denoiser reads μ but never moves it (only its own loss does)
            zeros = x_t.new_zeros(x_t.shape[0], self.n_genes, h, w)
            mean = zeros if cond.mean is None else cond.mean.detach()
        for extra in (cond.lr_mask_up, cond.hr_image, mean):
            if extra is not None:
                x_t = torch.cat([x_t, extra[..., :h, :w].to(x_t.dtype)], dim=1)
        if t is None:
            if not mean_mode:
                raise ValueError("t: timesteps are needed outside the mean pass")
            t = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        return self.denoiser(x_t, t, cond.features, cond.tokens, mean_mode=mean_mode)


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _check_sizes(cfg: ModelConfig, n_genes: int, channels: int, lr: int, hr: int) -> None:
    for name, value in (("n_genes", n_genes), ("image_channels", channels), ("lr_size", lr)):
        if value <= 0:
            raise ConfigError(f"model: {name} must be positive, got {value}")
    if hr <= 0 or hr % cfg.downsampling:
        raise ConfigError(
            f"model: hr_size {hr} must be a positive multiple of {cfg.downsampling} "
            f"(2^(len(channel_mult) − 1) with channel_mult {cfg.channel_mult})"
        )
