"""Configuration of the Diff-ST network (:class:`ModelConfig`).

Defaults are the paper's configuration (MICCAI 2024 and its released configuration): a UNet with
128 base channels, channel multipliers (1, 1, 1), one residual block per level, no
self-attention, learned variance; a 0.98/0.02 residual around the gene-graph convolution; a
0.9/0.1 residual around the dynamic cross-attention; a 25 % → 50 % → 100 % tile curriculum.
The number of image channels is not part of the configuration: it comes from the data
(3 for H&E, 2 for DAPI + polyT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffst.config import ConfigError

__all__ = ["AdjacencyKind", "ModelConfig", "parse_backbone"]

AdjacencyKind = Literal["intensity", "pearson", "pearson_positive", "pearson_topk"]
BackboneKind = Literal["builtin", "timm", "torchscript"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters and ablation switches of :class:`diffst.models.DiffSTModel`."""

    # --- denoising UNet ---
    base_channels: int = 128  # UNet width at full HR resolution (paper: 128)
    channel_mult: tuple[int, ...] = (1, 1, 1)  # width multiplier per level (paper: 1, 1, 1)
    num_res_blocks: int = 1  # residual blocks per encoder level (paper: 1)
    attention_resolutions: tuple[int, ...] = ()  # downsampling factors with self-attention (none)
    num_heads: int = 4  # heads of every attention layer
    dropout: float = 0.0  # dropout inside residual blocks (release: 0)
    learn_sigma: bool = True  # also predict the variance interpolation v (G extra channels)
    gradient_checkpointing: bool = False  # keep only the inputs of the UNet's blocks, upsampling
    # and output head, the built-in image encoders and the fusion for backward and recompute the
    # rest there: same values and gradients, less activation memory, one more forward's compute
    time_embed_mult: int = 4  # time-embedding width = time_embed_mult × base_channels
    norm_groups: int = 32  # GroupNorm groups (reduced to a divisor of the channel count)
    cond_channels: int = 64  # width of every conditioning feature map (per modality part)
    cond_token_grid: int = 16  # conditioning pooled to at most this side for bottleneck attention
    # --- LR encoder with the gene-correlation graph ---
    adjacency_kind: AdjacencyKind = "intensity"  # paper: co-expression intensity ratio
    graph_residual: float = 0.02  # output = (1 − w)·input + w·graph (release: 0.98 / 0.02)
    graph_gate: Literal["fixed", "learned"] = "fixed"  # w fixed at graph_residual (release), or
    # learned per gene (sigmoid, starting at 0.5) so the graph carries as much as the data want
    graph_topk: int = 8  # neighbours per gene of the "pearson_topk" adjacency (|r|, sparse)
    graph_kernel: int = 3  # side of the learnable spatial mixing over LR positions (LR cells)
    lr_hidden_channels: int = 64  # width of the convolutional LR encoder
    # --- histology encoder ---
    tissue_size: int = 256  # side of the tissue-level view (px)
    cell_grid: int = 16  # cell-level tiles form a cell_grid × cell_grid grid
    cell_tile_size: int = 16  # side of one cell-level tile (px)
    histology_channels: int = 64  # width of the built-in histology CNNs
    cross_attention_residual: float = 0.1  # tissue = (1 − w)·tissue + w·attended (release 0.1)
    curriculum_shares: tuple[float, ...] = (0.25, 0.5, 1.0)  # share of top-entropy tiles used
    curriculum_boundaries: tuple[float, ...] = (1 / 3, 2 / 3)  # training progress of switches
    # image features on the HR grid, concatenated to x_t at the UNet input (0 = off, the paper's
    # network): a small CNN over the patch at the cell tiles' resolution (their n×n mosaic),
    # area-pooled to one feature vector per HR bin, so image detail reaches every HR bin directly
    hr_image_channels: int = 0
    hr_image_width: int = 32  # width of that CNN
    backbone: str = "builtin"  # "builtin", "timm:<model_name>" or "torchscript:<path>"
    backbone_weights: str | None = None  # local weights file for a timm backbone (no download)
    backbone_trainable: bool = False  # fine-tune an external backbone (else frozen)
    # --- multi-modal fusion ---
    modulation_window: int = 3  # side of the local window of cross-modal modulation (cells)
    disentangle_eps: float = 1e-6  # ε in MSE(common) / (MSE(distinct) + ε)
    disentangle_kind: Literal["ratio", "cosine"] = "ratio"  # the paper's MSE ratio (minimised
    # by inflating the distinct parts), or a scale-free loss: (1 − cos) of the common parts plus
    # the positive part of cos of the distinct parts, per position
    mean_head: bool = False  # the UNet also regresses the normalised HR map from the condition
    # alone (x = 0, a learned mode embedding in place of the time embedding): Condition.mean, the
    # offset of diffusion.target='mean', which the denoiser also reads as G more input channels
    lr_mask_input: bool = False  # the LR encoder and the UNet input also read which LR cells hold
    # a measurement (else an unmeasured cell looks like zero expression)
    # --- ablation switches ---
    use_graph: bool = True  # gene-correlation graph convolution in the LR encoder
    use_cross_attention: bool = True  # dynamic cross-attention to cell-level tiles
    use_disentangle: bool = True  # common/distinct split (else concatenation + projection)
    use_modulation: bool = True  # cross-modal adaptive modulation
    use_histology: bool = True  # image branch (tissue view and cell tiles)
    use_lr: bool = True  # LR expression branch (False: histology only)
    lr_input_concat: bool = True  # upsampled LR map concatenated to x_t at the UNet input
    # (2G input channels, as the released super-resolution UNet intends); needs use_lr
    lr_upsample: Literal["nearest", "bicubic"] = "nearest"  # how that map (and the residual
    # process's offset) is put on the HR grid: each LR cell copied onto its f×f bins, or bicubic
    # interpolation of the normalised LR map between cell centres (clamped to ≥ −1, zero counts)

    def __post_init__(self) -> None:
        _positive(self, "base_channels", "num_res_blocks", "num_heads", "time_embed_mult")
        _positive(self, "norm_groups", "cond_channels", "cond_token_grid", "lr_hidden_channels")
        _positive(self, "tissue_size", "cell_grid", "cell_tile_size", "histology_channels")
        _positive(self, "graph_kernel", "modulation_window", "hr_image_width", "graph_topk")
        if self.graph_gate not in ("fixed", "learned"):
            raise ConfigError(f"model.graph_gate: {self.graph_gate!r} is not fixed or learned")
        if self.disentangle_kind not in ("ratio", "cosine"):
            raise ConfigError(
                f"model.disentangle_kind: {self.disentangle_kind!r} is not ratio or cosine"
            )
        if self.hr_image_channels < 0:
            raise ConfigError(f"model.hr_image_channels must be ≥ 0, got {self.hr_image_channels}")
        if not self.channel_mult or min(self.channel_mult) <= 0:
            raise ConfigError(
                f"model.channel_mult: positive integers needed, got {self.channel_mult}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must lie in [0, 1), got {self.dropout}")
        for name in ("graph_residual", "cross_attention_residual"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.{name}: must lie in [0, 1], got {getattr(self, name)}")
        if self.graph_kernel % 2 == 0 or self.modulation_window % 2 == 0:
            raise ConfigError("model.graph_kernel and model.modulation_window must be odd")
        shares, bounds = self.curriculum_shares, self.curriculum_boundaries
        if not shares or any(not 0.0 < s <= 1.0 for s in shares):
            raise ConfigError(f"model.curriculum_shares: values in (0, 1] needed, got {shares}")
        if len(bounds) != len(shares) - 1 or list(bounds) != sorted(bounds):
            raise ConfigError(
                "model.curriculum_boundaries: need len(curriculum_shares) − 1 increasing values, "
                f"got {bounds} for shares {shares}"
            )
        if not (self.use_histology or self.use_lr):
            raise ConfigError(
                "model: use_histology and use_lr are both false; nothing to condition on"
            )
        if self.lr_upsample not in ("nearest", "bicubic"):
            raise ConfigError(
                f"model.lr_upsample: 'nearest' or 'bicubic', got {self.lr_upsample!r}"
            )
        parse_backbone(self.backbone)

    @property
    def n_levels(self) -> int:
        """Number of UNet resolution levels."""
        return len(self.channel_mult)

    @property
    def downsampling(self) -> int:
        """Factor between the HR map and the UNet bottleneck (the conditioning grid)."""
        return 2 ** (len(self.channel_mult) - 1)

    def curriculum_share(self, progress: float) -> float:
        """Share of top-ranked cell tiles used at training progress ``progress`` ∈ [0, 1]."""
        level = sum(progress >= b for b in self.curriculum_boundaries)
        return self.curriculum_shares[level]


def parse_backbone(spec: str) -> tuple[BackboneKind, str]:
    """Split a backbone spec into its kind and argument.

    Parameters
    ----------
    spec
        ``"builtin"``, ``"timm:<model_name>"`` or ``"torchscript:<path>"``.

    Returns
    -------
    (kind, argument)
        ``argument`` is ``""`` for the built-in CNN.
    """
    if spec == "builtin":
        return "builtin", ""
    kind, _, arg = spec.partition(":")
    if kind == "timm" and arg:
        return "timm", arg
    if kind == "torchscript" and arg:
        return "torchscript", arg
    raise ConfigError(
        f"model.backbone: {spec!r} is not 'builtin', 'timm:<model_name>' or 'torchscript:<path>'"
    )


def _positive(cfg: ModelConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"model.{name}: must be a positive integer, got {value!r}")
