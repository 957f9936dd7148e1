"""K samples per tile → per-bin, per-gene mean, standard deviation and 5 % / 95 % quantiles.

The statistics are computed on the **count scale**, after the samples were mapped back from the
diffusion scale with the store's inverse normalisation, so every layer of the output AnnData has
the unit "counts per HR bin".

Whole-section stitching (see :mod:`diffst.inference.tiled`) blends the point estimate and the
samples' mean with the tile blending weights (the blend of means is the mean of the blend); the
standard deviation and the quantiles of a bin come from the one tile in which the bin is most
central, so q05/q95 are real quantiles of one tile's K samples (an average of quantiles is the
quantile of no distribution). No tile's samples are kept, so the pipeline stays streaming.
"""

from __future__ import annotations

from enum import IntEnum

import torch

__all__ = ["N_STATS", "QUANTILES", "Stat", "quantile_linear", "sample_statistics"]

QUANTILES: tuple[float, float] = (0.05, 0.95)
"""Lower and upper quantile levels stored in layers ``q05`` and ``q95``."""


class Stat(IntEnum):
    """Index of each statistic along the statistics axis of a prediction.

    :func:`sample_statistics` returns the first four, with ``MEAN`` the samples' mean; a whole
    prediction carries all five, with ``MEAN`` the point estimate (``X``: the samples' mean or
    the denoiser's posterior mean, see ``PredictConfig.mean_estimator``) and ``SAMPLE_MEAN``
    the samples' mean.
    """

    MEAN = 0
    STD = 1
    Q05 = 2
    Q95 = 3
    SAMPLE_MEAN = 4


#: statistics of a whole prediction (:class:`Stat`)
N_STATS = len(Stat)


def quantile_linear(sorted_x: torch.Tensor, q: float, dim: int) -> torch.Tensor:
    """Quantile ``q`` of values already sorted along ``dim`` with linear interpolation.

    Same definition as ``numpy.quantile(..., method="linear")``: position ``q·(K − 1)`` between
    the order statistics. Works for any tensor size (``torch.quantile`` has a size limit).
    """
    k = sorted_x.shape[dim]
    pos = q * (k - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, k - 1)
    frac = pos - lo
    x_lo = sorted_x.select(dim, lo)
    x_hi = sorted_x.select(dim, hi)
    return x_lo + (x_hi - x_lo) * frac


def sample_statistics(samples: torch.Tensor) -> torch.Tensor:
    """Statistics over the sample axis.

    Parameters
    ----------
    samples
        ``[B, K, G, H, W]`` samples on the count scale (``B`` tiles, ``K`` samples each).

    Returns
    -------
    torch.Tensor
        ``[B, 4, G, H, W]`` float32 with, along axis 1 (see :class:`Stat`): mean, standard
        deviation (unbiased, ``ddof = 1``; 0 when ``K = 1``), q05 and q95 (linear interpolation).
    """
    if samples.ndim != 5:
        raise ValueError(f"samples must be [B, K, G, H, W], got shape {tuple(samples.shape)}")
    x = samples.float()
    k = x.shape[1]
    mean = x.mean(dim=1)
    std = x.std(dim=1, correction=1) if k > 1 else torch.zeros_like(mean)
    ordered = x.sort(dim=1).values
    q_lo = quantile_linear(ordered, QUANTILES[0], dim=1)
    q_hi = quantile_linear(ordered, QUANTILES[1], dim=1)
    return torch.stack([mean, std, q_lo, q_hi], dim=1)
