"""Training objective: simple denoising loss + λ·variational bound + disentangling loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffst.diffusion.config import DiffusionConfig
from diffst.diffusion.schedule import (
    Denoiser,
    NoiseSchedule,
    discretised_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
)

__all__ = [
    "LossTerms",
    "draw_timesteps_and_noise",
    "masked_mean",
    "training_losses",
    "vb_terms_bits",
]


@dataclass(frozen=True)
class LossTerms:
    """Scalar loss terms of one batch.

    ``total = simple + vb_weight·T·vb + disentangle_weight·disentangle + mean_weight·mean``.
    """

    total: Tensor
    """What is back-propagated."""
    simple: Tensor
    """Charbonnier (or squared) error of the ε / v prediction, mean over in-mask bins."""
    vb: Tensor
    """L_t of the variational bound at the sampled t, bits per in-mask bin (0 without learned σ)."""
    disentangle: Tensor
    """``cond.disentangle_loss`` (0 when the condition has none)."""
    mean: Tensor
    """Squared error of the condition's regression ``cond.mean`` against x0, mean over in-mask
    bins (0 when the condition has none, i.e. without ``model.mean_head``)."""


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values [B, G, H, W]`` over bins where ``mask [B, 1, H, W]`` is nonzero.

    Values outside the mask are never read (NaN there is harmless). An empty mask gives 0.
    """
    keep = (mask > 0).expand_as(values)
    total = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum() / keep.sum().clamp_min(1)


def vb_terms_bits(
    schedule: NoiseSchedule,
    prediction: Tensor,
    variance: Tensor | None,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    *,
    decoder_nll: str = "gaussian",
) -> Tensor:
    """Per-bin term L_t of the variational bound, in bits, ``[B, G, H, W]``.

    L_t = KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t)) for t > 0 and the decoder negative
    log-likelihood −log p_θ(x0 | x_1) at t = 0 (DDPM eq. 5; improved DDPM §3.1). No clipping.
    """
    true_mean, true_log_var = schedule.q_posterior(x0, x_t, t)
    p = schedule.p_mean_variance(prediction, variance, x_t, t, clip_denoised=False)
    kl = normal_kl(true_mean, true_log_var, p.mean, p.log_variance)
    if decoder_nll == "gaussian":
        nll = -gaussian_log_likelihood(x0, p.mean, p.log_variance)
    else:
        nll = -discretised_gaussian_log_likelihood(x0, p.mean, p.log_variance)
    first = (t == 0).reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.where(first, nll, kl) / math.log(2.0)


def draw_timesteps_and_noise(
    schedule: NoiseSchedule,
    x0: Tensor,
    cfg: DiffusionConfig,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``t [B]`` and ``ε [B, G, H, W]`` of a batch, in the order :func:`training_losses` draws them.

    t ~ U{0, …, T−1} and ε ~ N(0, I) (DDPM Algorithm 1, lines 3–4); with ``cfg.t_max_share``
    a share of the batch at t = T − 1, where the output is the regression estimate of x0. Given
    values are kept (moved to ``x0``'s device).
    """
    device = generator.device if generator is not None else x0.device
    if t is None:
        t = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator, device=device)
        if cfg.t_max_share > 0:
            at_max = torch.rand(x0.shape[0], generator=generator, device=device) < cfg.t_max_share
            t = torch.where(at_max, torch.full_like(t, schedule.num_steps - 1), t)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    return t.to(x0.device), noise.to(x0.device)


def training_losses(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: Tensor,
    cond: Any,
    mask: Tensor,
    cfg: DiffusionConfig,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> LossTerms:
    """Hybrid objective of improved DDPM with the paper's Charbonnier penalty, on one batch.

    Parameters
    ----------
    model
        Denoiser ``model(x_t, t, cond)``; its ``variance`` must be given iff ``cfg.learn_sigma``.
    schedule
        The unrespaced T-step schedule (``NoiseSchedule.from_config(cfg)``).
    x0
        ``[B, G, H, W]`` normalised HR expression in [-1, 1].
    cond
        Opaque condition passed to the model; ``cond.disentangle_loss`` is added if present.
    mask
        ``[B, 1, H, W]``, nonzero on bins that count. Bins outside are set to 0 in x0 before
        noising and excluded from every average, so their values never affect the loss.
    cfg
        Loss settings (simple loss, λ, weights).
    generator
        Source of t and ε (defaults to torch's global generator).
    t
        ``[B]`` int64 timesteps; drawn uniformly from [0, T) when None.
    noise
        ``[B, G, H, W]`` ε; drawn from ``generator`` (after ``t``) when None.
    """
    if schedule.num_steps != cfg.num_steps:
        raise ValueError(
            f"training needs the {cfg.num_steps}-step schedule, got {schedule.num_steps} steps"
        )
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != x0.shape[0]:
        raise ValueError(
            f"mask must be [B, 1, H, W] for x0 {tuple(x0.shape)}, got {tuple(mask.shape)}"
        )
    t, noise = draw_timesteps_and_noise(schedule, x0, cfg, generator, t, noise)
    # 2. x_t from q(x_t | x0) (DDPM eq. 4), with out-of-mask bins of x0 zeroed; for the residual
    #    process x0 is first replaced by its residual over the LR map on the HR grid.
    zero = torch.zeros((), dtype=x0.dtype, device=x0.device)
    cond_mean = getattr(cond, "mean", None)
    mean_loss = zero if cond_mean is None else masked_mean((cond_mean.to(x0.dtype) - x0) ** 2, mask)
    offset = schedule.data_offset(cond, x0)
    if offset is not None:
        x0 = x0 - offset
    x0 = torch.where(mask > 0, x0, zero)
    x_t = schedule.q_sample(x0, t, noise)
    out = model(x_t, schedule.model_timesteps(t), cond)
    if (out.variance is not None) != cfg.learn_sigma:
        raise ValueError(
            f"diffusion.learn_sigma={cfg.learn_sigma} but the model "
            f"{'returns' if out.variance is not None else 'does not return'} a variance"
        )
    # 3. L_simple on the prediction target (DDPM eq. 14, Charbonnier penalty as in Diff-ST).
    error = out.prediction - schedule.target(x0, noise, t)
    if cfg.simple_loss == "charbonnier":
        penalty = torch.sqrt(error**2 + cfg.charbonnier_eps**2)
    else:
        penalty = error**2
    simple = masked_mean(penalty, mask)
    # 4. L_vb with a stop-gradient on the mean, so it trains only Σ_θ (improved DDPM eq. 16).
    vb = zero
    if out.variance is not None:
        terms = vb_terms_bits(
            schedule,
            out.prediction.detach(),
            out.variance,
            x0,
            x_t,
            t,
            decoder_nll=cfg.decoder_nll,
        )
        vb = masked_mean(terms, mask)
    # 5. Disentangling loss of the condition encoder (Diff-ST, weight 0.01).
    disentangle = getattr(cond, "disentangle_loss", None)
    disentangle = zero if disentangle is None else disentangle.to(x0.dtype)
    # 6. The regression μ of model.mean_head: squared error against the data (x0 before offsets).
    total = simple + cfg.vb_weight * schedule.num_steps * vb + cfg.disentangle_weight * disentangle
    total = total + cfg.mean_weight * mean_loss
    return LossTerms(total=total, simple=simple, vb=vb, disentangle=disentangle, mean=mean_loss)
