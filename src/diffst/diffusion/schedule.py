"""The Gaussian diffusion process: every α/β formula used by training and by the samplers.

Notation (Ho et al. 2020, "DDPM"; Nichol & Dhariwal 2021, "improved DDPM"): β_t the noise
variance added at step t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, β̃_t the variance of the posterior
q(x_{t−1} | x_t, x0). Indices are 0-based: index t is the paper's step t + 1, so ᾱ at index 0 is
1 − β_1 and the sample returned by a sampler is the prediction of x0 made at index 0.

All buffers are float64 numpy arrays; they are converted to torch (on the tensor's device and
dtype) only when used, so conversions are exact to float64 before the final cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, get_args

import numpy as np
import torch
from torch import Tensor

from diffst.diffusion.config import BetaSchedule, DiffusionConfig, DiffusionTarget, Prediction

__all__ = [
    "Denoiser",
    "DenoiserOutputLike",
    "NoiseSchedule",
    "PMeanVariance",
    "discretised_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "make_betas",
    "normal_kl",
]

COSINE_OFFSET = 0.008
"""s of the cosine schedule (improved DDPM eq. 17)."""
MAX_BETA = 0.999
"""Upper clip of β for the cosine schedule (improved DDPM, §3.2)."""


class DenoiserOutputLike(Protocol):
    """What the denoiser returns (``diffst.models.DenoiserOutput`` satisfies it)."""

    @property
    def prediction(self) -> Tensor:
        """``[B, G, H, W]`` ε or v, per :attr:`DiffusionConfig.prediction`."""

    @property
    def variance(self) -> Tensor | None:
        """``[B, G, H, W]`` learned-range value v ∈ [-1, 1], or None for a fixed variance."""


class Denoiser(Protocol):
    """``model(x_t [B, G, H, W], t [B] int64 in [0, T), cond) -> DenoiserOutputLike``."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> DenoiserOutputLike: ...


@dataclass(frozen=True)
class PMeanVariance:
    """Reverse step p(x_{t−1} | x_t) = N(mean, exp(log_variance)); all ``[B, G, H, W]``."""

    mean: Tensor
    log_variance: Tensor
    pred_x0: Tensor
    pred_eps: Tensor


def make_betas(name: BetaSchedule, num_steps: int) -> np.ndarray:
    """β_1 … β_T (float64, length T) of a named schedule.

    ``linear``: Ho et al. (2020) β from 1e-4 to 0.02 for T = 1000, both ends multiplied by
    1000 / T so that the schedule stays similar for other T (improved DDPM).
    ``cosine``: improved DDPM eq. (17), ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2),
    β_t = 1 − ᾱ(t)/ᾱ(t−1) clipped at 0.999.
    """
    if name == "linear":
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":
        steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        f = np.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], MAX_BETA)
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear' or 'cosine'")


class NoiseSchedule:
    """Buffers of the forward process and the conversions between x0, ε and v.

    Parameters
    ----------
    betas
        ``[S]`` β per step, in (0, 1].
    timestep_map
        ``[S]`` int, index of each step in the original T-step process (what the denoiser is
        given as ``t``); identity for an unrespaced schedule.
    prediction
        What the denoiser predicts: ``"eps"``, ``"v"`` or ``"x0"``.
    """

    def __init__(
        self,
        betas: np.ndarray,
        timestep_map: np.ndarray | None = None,
        *,
        prediction: Prediction = "eps",
        target: DiffusionTarget = "hr",
    ) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a non-empty 1-D array with values in (0, 1]")
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")
        steps = np.arange(betas.size) if timestep_map is None else np.asarray(timestep_map)
        if steps.shape != betas.shape or (np.diff(steps) <= 0).any():
            raise ValueError("timestep_map must be increasing with one entry per beta")
        self.prediction: Prediction = prediction
        if target not in get_args(DiffusionTarget):
            raise ValueError(f"target must be one of {get_args(DiffusionTarget)}, got {target!r}")
        self.diffused: DiffusionTarget = target  # what is diffused (diffusion.target)
        self.betas = betas
        self.timestep_map = steps.astype(np.int64)
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        # Posterior q(x_{t−1} | x_t, x0) = N(c1·x0 + c2·x_t, β̃_t): DDPM eqs. (6)–(7).
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # β̃ is 0 at index 0: its log is clipped to β̃ at index 1 (improved DDPM).
        first = self.posterior_variance[1] if betas.size > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        self._cache: dict[tuple[str, str], Tensor] = {}

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> NoiseSchedule:
        """The T-step schedule of ``cfg`` (β schedule and prediction type)."""
        return cls(
            make_betas(cfg.beta_schedule, cfg.num_steps),
            prediction=cfg.prediction,
            target=cfg.target,
        )

    @property
    def num_steps(self) -> int:
        """Number of steps S of this (possibly respaced) schedule."""
        return int(self.betas.size)

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(steps={self.num_steps}, "
            f"original_steps={int(self.timestep_map[-1]) + 1}, prediction={self.prediction!r})"
        )

    def respace(self, steps: int) -> NoiseSchedule:
        """Schedule restricted to ``steps`` evenly spaced steps (improved DDPM, §4).

        Selected indices are ``round(linspace(0, S − 1, steps))`` (only S − 1 when steps = 1);
        the new β_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}} keep ᾱ identical at the selected steps, and
        :attr:`timestep_map` maps each new index to the original ``t`` given to the denoiser.
        """
        if not 1 <= steps <= self.num_steps:
            raise ValueError(f"steps must be in [1, {self.num_steps}], got {steps}")
        if steps == self.num_steps:
            return NoiseSchedule(
                self.betas, self.timestep_map, prediction=self.prediction, target=self.diffused
            )
        if steps == 1:
            keep = np.array([self.num_steps - 1])
        else:
            keep = np.floor(np.linspace(0, self.num_steps - 1, steps) + 0.5).astype(np.int64)
        kept_alphas = self.alphas_cumprod[keep]
        betas = 1.0 - kept_alphas / np.append(1.0, kept_alphas[:-1])
        return NoiseSchedule(
            betas, self.timestep_map[keep], prediction=self.prediction, target=self.diffused
        )

    @property
    def residual(self) -> bool:
        """True when the diffused variable is data minus an offset taken from the condition."""
        return self.diffused != "hr"

    def data_offset(self, cond: Any, like: Tensor) -> Tensor | None:
        """Offset between data and the diffused variable: data = x + offset.

        ``None`` for the plain process; for ``residual`` the LR map on the HR grid
        (``cond.lr_up``), for ``mean`` the network's own regression of the HR map
        (``cond.mean``, cut from the autograd graph: the diffusion loss never moves it), each
        cropped to ``like``'s ``[H, W]``.
        """
        if self.diffused == "hr":
            return None
        name = "lr_up" if self.diffused == "residual" else "mean"
        offset = getattr(cond, name, None)
        if offset is None:
            need = "model.lr_input_concat" if name == "lr_up" else "model.mean_head"
            raise ValueError(f"diffusion.target={self.diffused!r} needs cond.{name}; enable {need}")
        h, w = like.shape[-2:]
        return offset[..., :h, :w].detach().to(like.dtype)

    def model_timesteps(self, t: Tensor) -> Tensor:
        """``[B]`` int64 original timesteps (denoiser input) of schedule indices ``t``."""
        return self._buffer("timestep_map", t.device)[t]

    def coef(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Buffer ``name`` at indices ``t [B]``, shaped ``[B, 1, …]`` to broadcast over ``like``."""
        values = self._buffer(name, like.device)[t.to(like.device)]
        return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def _buffer(self, name: str, device: torch.device) -> Tensor:
        key = (name, str(device))
        if key not in self._cache:
            array = getattr(self, name)
            if not isinstance(array, np.ndarray):
                raise AttributeError(f"NoiseSchedule has no buffer {name!r}")
            tensor = torch.from_numpy(array)
            if device.type == "mps" and tensor.dtype == torch.float64:
                tensor = tensor.float()
            self._cache[key] = tensor.to(device)
        return self._cache[key]

    # --- forward process and parameterisations -------------------------------------------

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, a draw of q(x_t | x0) (DDPM eq. 4); ``[B, G, H, W]``."""
        return (
            self.coef("sqrt_alphas_cumprod", t, x0) * x0
            + self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def v_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 (Salimans & Ho 2022, §4)."""
        return (
            self.coef("sqrt_alphas_cumprod", t, x0) * noise
            - self.coef("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        )

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t (inverse of DDPM eq. 4)."""
        sqrt_ab = self.coef("sqrt_alphas_cumprod", t, x_t)
        return (x_t - self.coef("sqrt_one_minus_alphas_cumprod", t, x_t) * eps) / sqrt_ab

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t − √ᾱ_t·x0) / √(1−ᾱ_t)."""
        sqrt_ab = self.coef("sqrt_alphas_cumprod", t, x_t)
        return (x_t - sqrt_ab * x0) / self.coef("sqrt_one_minus_alphas_cumprod", t, x_t)

    def x0_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v."""
        return (
            self.coef("sqrt_alphas_cumprod", t, x_t) * x_t
            - self.coef("sqrt_one_minus_alphas_cumprod", t, x_t) * v
        )

    def predict_x0(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x0 implied by the network output (ε, v or x0 per :attr:`prediction`)."""
        if self.prediction == "eps":
            return self.x0_from_eps(x_t, t, prediction)
        if self.prediction == "x0":
            return prediction
        return self.x0_from_v(x_t, t, prediction)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Regression target of the network: ε, v or x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return self.v_target(x0, noise, t)

    # --- reverse process -----------------------------------------------------------------

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clipped log-variance of q(x_{t−1} | x_t, x0) (DDPM eqs. 6–7)."""
        mean = (
            self.coef("posterior_mean_coef1", t, x_t) * x0
            + self.coef("posterior_mean_coef2", t, x_t) * x_t
        )
        log_var = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, log_var

    def model_log_variance(self, variance: Tensor | None, t: Tensor, like: Tensor) -> Tensor:
        """log Σ_θ: learned range (improved DDPM eq. 15) or the fixed posterior log β̃.

        ``variance`` v ∈ [-1, 1] gives frac = (v + 1)/2 and
        log Σ = frac·log β_t + (1 − frac)·log β̃_t: v = −1 → β̃_t, v = +1 → β_t.
        """
        min_log = self.coef("posterior_log_variance_clipped", t, like)
        if variance is None:
            return min_log.expand_as(like)
        frac = (variance + 1.0) / 2.0
        return frac * self.coef("log_betas", t, like) + (1.0 - frac) * min_log

    def p_mean_variance(
        self,
        prediction: Tensor,
        variance: Tensor | None,
        x_t: Tensor,
        t: Tensor,
        *,
        clip_denoised: bool,
        offset: Tensor | None = None,
    ) -> PMeanVariance:
        """Reverse step p(x_{t−1} | x_t) from the network output at schedule indices ``t``.

        With ``offset`` (residual process, data = x + offset) clipping keeps the *data* in
        [-1, 1]: x̂0 ← clip(x̂0 + offset) − offset.

        x̂0 is derived from ε or v (optionally clipped to [-1, 1]); the mean is the posterior
        mean given x̂0 (DDPM eq. 7, equivalent to eq. 11 for ε); ε̂ is re-derived from the
        clipped x̂0 so that deterministic samplers stay consistent with it.
        """
        pred_x0 = self.predict_x0(prediction, x_t, t)
        if clip_denoised:
            if offset is None:
                pred_x0 = pred_x0.clamp(-1.0, 1.0)
            else:
                pred_x0 = (pred_x0 + offset).clamp(-1.0, 1.0) - offset
        mean, _ = self.q_posterior(pred_x0, x_t, t)
        return PMeanVariance(
            mean=mean,
            log_variance=self.model_log_variance(variance, t, x_t),
            pred_x0=pred_x0,
            pred_eps=self.eps_from_x0(x_t, t, pred_x0),
        )


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """log N(x; mean, e^log_variance) per element, in nats (continuous density)."""
    return -0.5 * (
        math.log(2 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance)
    )


def discretised_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_variance: Tensor, *, levels: int = 256
) -> Tensor:
    """log P(x) of a Gaussian integrated over ``levels`` bins on [-1, 1] (DDPM §3.3), in nats.

    The outermost bins extend to ±∞. ``x`` should lie on the bin centres.
    """
    half_width = 1.0 / (levels - 1)
    inv_std = torch.exp(-0.5 * log_variance)
    upper = (x - mean + half_width) * inv_std
    lower = (x - mean - half_width) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    mass = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12)
    return torch.where(
        x < -1.0 + half_width,
        log_cdf_upper,
        torch.where(x > 1.0 - half_width, log_sf_lower, torch.log(mass)),
    )
