"""Configuration of ``diffst predict`` (whole-section inference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from diffst.config import ConfigError

__all__ = [
    "BlendWindow",
    "MeanEstimator",
    "Precision",
    "PredictConfig",
    "Sampler",
    "StreamMode",
    "resolve_estimator",
]

Sampler = Literal["ddpm", "ddim", "dpmpp"]
BlendWindow = Literal["cosine", "uniform"]
Precision = Literal["fp32", "bf16"]
MeanEstimator = Literal["auto", "denoiser", "samples"]
StreamMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class PredictConfig:
    """Options of whole-section prediction.

    The sampler and its steps default to the checkpoint's own (``diffusion.sampler`` and
    ``diffusion.sampling_steps`` of its preset: 20 respaced ancestral DDPM steps for ``paper``,
    as the paper samples); the number of samples per tile (8) is the default the uncertainty
    estimates use.
    """

    sampler: Sampler | None = None
    # reverse-diffusion algorithm: ancestral DDPM (respaced), DDIM, or DPM-Solver++ (2nd order);
    # None = the checkpoint's own diffusion.sampler (paper preset: ddpm; small: ddim)
    steps: int | None = None
    # network evaluations per sample (respaced timesteps); None = the checkpoint's
    # diffusion.sampling_steps (the paper samples with 20; small: 10)
    eta: float = 0.0
    # DDIM stochasticity η (0 = deterministic DDIM; ignored by the other samplers)
    n_samples: int = 8
    # K samples drawn per tile → mean, std, q05, q95 per bin and gene
    mean_estimator: MeanEstimator = "auto"
    # the point prediction X: "samples" = mean of the K samples (estimates E[counts | inputs]);
    # "denoiser" = the network's posterior mean on the normalised (log) scale at t = T, averaged
    # over K draws and mapped back to counts (one more network evaluation per draw; far less
    # noisy, totals below the samples'; v- and x0-networks only); "auto" = "denoiser" where the
    # checkpoint allows it, else "samples". layers['sample_mean'] always holds the samples' mean
    seed: int = 0
    # base seed; per-tile seeds derive from (seed, tile index), independent of batching/GPUs
    overlap_bins: int | None = None
    # overlap of neighbouring tiles in HR bins; None = a quarter of the patch side.
    # The tile stride is rounded down to a multiple of the LR factor so tiles align with LR cells.
    batch_size: int = 0
    # tiles per forward batch (each tile is repeated K times, so B·K patches per network call);
    # 0 = automatic (diffst.inference.tiled.tile_batch_size): on a CPU as many tiles as keep a
    # call's widest tensor (B·K·max(base_channels, 4G)·P² fp32) within 4 MiB, at least 1; else 4
    blend: BlendWindow = "cosine"
    # per-tile blending weights: "cosine" = Hann window sampled at bin centres (never 0),
    # "uniform" = plain average of overlapping tiles
    project_to_spots: bool = True
    # rescale bins so each measured spot's (LR cell's) per-gene total equals its measured counts:
    # the point prediction is the network's posterior mean of the log-scale expression, whose
    # back-transform runs below the counts (Jensen; count ratio 0.7–0.8 unprojected), while the
    # LR input measures each spot's total. Every statistic of a spot's bins is scaled alike;
    # uns['diffst']['spot_consistency'] reports the raw prediction's agreement and total ratio
    device: str = "auto"
    # torch device ("auto" = CUDA when available, else CPU; under torchrun: cuda:LOCAL_RANK)
    precision: Precision = "fp32"
    # network arithmetic: "fp32", or "bf16" autocast where native (GPUs from Ampere on, CPUs with
    # AVX512-BF16 or AMX; fp32 elsewhere, with a warning); the sampler state stays fp32
    figure_genes: tuple[str, ...] = ()
    # genes drawn as per-gene PNG figures (empty = the n_figure_genes most expressed)
    n_figure_genes: int = 4
    # number of genes drawn when figure_genes is empty (0 = no figures)
    max_missing_genes: float = 0.1
    # share of the checkpoint's genes the section may lack (matched by name or id). Their LR
    # input is not measured: it is imputed from the co-expressed genes the section has (the
    # training Pearson neighbours recorded in the checkpoint), and the network predicts them from
    # that and the image; var['in_section'] is False and var['lr_source'] says so, and they are
    # not projected onto the spots. A larger share is refused (0: refuse any missing gene)
    hires_max_px: int = 2000
    # longest side (px) of the downsampled image stored in uns['spatial'][library]['images']
    write_spatialdata: bool = False
    # also write a SpatialData zarr next to the h5ad (requires the optional `spatialdata`)
    region_um: tuple[float, float, float, float] | None = None
    # (x0, y0, x1, y1) µm in the section frame: predict this rectangle only (snapped outwards to
    # the section's LR grid); memory and time then follow the region, not the section
    stream: StreamMode = "auto"
    # "on": predict the section block by block and write each block's bins to the h5ad as it is
    # done, so memory is bounded by one block (diffst.inference.streamed), not by genes × bins;
    # "off": keep the whole section's statistics in memory and write the h5ad at the end;
    # "auto": stream when those statistics (5 × 4 bytes per gene and HR bin) exceed block_gib
    block_gib: float = 1.0
    # the memory (GiB) of one block's statistics when streaming; the block side follows from it
    # and the number of genes (whole LR cells, a multiple of the tile stride)
    uncertainty_genes: tuple[str, ...] | None = None
    # genes whose sample statistics (std, q05, q95, samples' mean) are written. None: every gene,
    # as layers (four values per gene and bin beside X); a list: those genes only, as obsm
    # DataFrames obsm['std' | 'q05' | 'q95' | 'sample_mean'] (columns = genes), so a large
    # panel's file holds X and the chosen genes' intervals; (): none. uns['diffst']['uncertainty']
    # records the choice

    def sampling(self, diffusion: Any) -> tuple[Sampler, int]:
        """The sampler and steps to use: these fields, or where None the checkpoint's
        ``diffusion.sampler`` / ``diffusion.sampling_steps`` (its preset's choice)."""
        sampler = self.sampler if self.sampler is not None else diffusion.sampler
        steps = self.steps if self.steps is not None else diffusion.sampling_steps
        return cast(Sampler, sampler), int(steps)

    def __post_init__(self) -> None:
        if self.sampler not in (None, "ddpm", "ddim", "dpmpp"):
            raise ConfigError(f"predict.sampler: {self.sampler!r} is not ddpm, ddim or dpmpp")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"predict.steps must be ≥ 1, got {self.steps}")
        if self.n_samples < 1:
            raise ConfigError(f"predict.n_samples must be ≥ 1, got {self.n_samples}")
        if self.batch_size < 0:
            raise ConfigError(
                f"predict.batch_size must be ≥ 0 (0 = automatic), got {self.batch_size}"
            )
        if self.overlap_bins is not None and self.overlap_bins < 0:
            raise ConfigError(f"predict.overlap_bins must be ≥ 0, got {self.overlap_bins}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"predict.eta must lie in [0, 1], got {self.eta}")
        if self.hires_max_px < 16:
            raise ConfigError(f"predict.hires_max_px must be ≥ 16, got {self.hires_max_px}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"predict.precision: {self.precision!r} is not fp32 or bf16")
        if self.mean_estimator not in ("auto", "denoiser", "samples"):
            raise ConfigError(
                f"predict.mean_estimator: {self.mean_estimator!r} is not auto, denoiser or samples"
            )
        if self.blend not in ("cosine", "uniform"):
            raise ConfigError(f"predict.blend: {self.blend!r} is not cosine or uniform")
        if not 0.0 <= self.max_missing_genes < 1.0:
            raise ConfigError(
                f"predict.max_missing_genes must be in [0, 1), got {self.max_missing_genes}"
            )
        if self.stream not in ("auto", "on", "off"):
            raise ConfigError(f"predict.stream: {self.stream!r} is not auto, on or off")
        if not self.block_gib > 0:
            raise ConfigError(f"predict.block_gib must be > 0, got {self.block_gib}")
        if self.region_um is not None:
            if len(self.region_um) != 4:
                raise ConfigError(f"predict.region_um: (x0, y0, x1, y1) µm, got {self.region_um}")
            x0, y0, x1, y1 = map(float, self.region_um)
            if not (x1 > x0 and y1 > y0):
                raise ConfigError(
                    f"predict.region_um: x1 > x0 and y1 > y0 needed, got {self.region_um}"
                )


def resolve_estimator(choice: str, prediction: str, where: str = "predict.mean_estimator") -> str:
    """``auto`` → ``denoiser`` for v- and x0-networks, ``samples`` for ε-networks.

    Raises :class:`ConfigError` for ``denoiser`` with an ε-network (its x̂0 at t = T is
    ill-conditioned).
    """
    if choice == "auto":
        return "samples" if prediction == "eps" else "denoiser"
    if choice == "denoiser" and prediction == "eps":
        raise ConfigError(
            f"{where}: 'denoiser' needs a checkpoint trained with diffusion.prediction v or x0; "
            "this one predicts ε; use 'samples' (or 'auto')"
        )
    return choice
