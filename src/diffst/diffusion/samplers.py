"""Samplers of the reverse process: ancestral DDPM, DDIM and DPM-Solver++(2M).

Each sampler is one pure function that follows its paper's algorithm step by step. Noise comes
from one ``torch.Generator`` per sample, drawn in the same order whatever the batch, so a sample
depends only on its seed and its condition, not on the batch it was drawn in.

References
----------
* Ho, Jain & Abbeel (2020), Denoising Diffusion Probabilistic Models (DDPM).
* Nichol & Dhariwal (2021), Improved Denoising Diffusion Probabilistic Models (respacing, Σ_θ).
* Song, Meng & Ermon (2021), Denoising Diffusion Implicit Models (DDIM).
* Lu et al. (2022a), DPM-Solver; Lu et al. (2022b), DPM-Solver++.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from diffst.diffusion.config import SamplerName
from diffst.diffusion.schedule import Denoiser, NoiseSchedule, PMeanVariance

__all__ = [
    "count_network_evaluations",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_sample",
    "logsnr_timesteps",
    "make_generators",
    "posterior_mean_draws",
    "sample",
    "sample_groups",
    "seeded_normal",
]


def make_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One ``torch.Generator`` per sample, seeded with ``seeds[i]``, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def seeded_normal(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``[B, *shape[1:]]`` standard normal noise, row i drawn from ``generators[i]``."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per sample: {len(generators)} for batch {shape[0]}")
    rows = [
        torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generators
    ]
    return torch.stack(rows).to(device)


def _steps(indices: Sequence[int], progress: bool, name: str) -> Iterable[int]:
    if not progress:
        return indices
    from rich.progress import track

    return track(indices, description=f"{name} sampling")


def _denoise(
    model: Denoiser,
    schedule: NoiseSchedule,
    x: Tensor,
    index: int,
    cond: Any,
    clip_denoised: bool,
) -> PMeanVariance:
    """One network evaluation at schedule index ``index`` → p(x_{t−1} | x_t) and x̂0."""
    t = torch.full((x.shape[0],), index, dtype=torch.int64, device=x.device)
    out = model(x, schedule.model_timesteps(t), cond)
    offset = schedule.data_offset(cond, x)
    return schedule.p_mean_variance(
        out.prediction, out.variance, x, t, clip_denoised=clip_denoised, offset=offset
    )


@torch.no_grad()
def ddpm_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    steps: int,
    generators: Sequence[torch.Generator],
    *,
    clip_denoised: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling (DDPM Algorithm 2) on ``steps`` respaced steps with learned Σ_θ.

    Parameters
    ----------
    model, schedule, cond
        Denoiser, the T-step schedule it was trained with, and its condition.
    shape
        ``[B, G, H, W]`` of the result.
    steps
        Number of respaced steps (= network evaluations); T gives the full chain.
    generators
        One seeded generator per sample (:func:`make_generators`).

    Returns
    -------
    Tensor
        ``[B, G, H, W]`` samples of x0 (the mean of the last step, which is x̂0).
    """
    spaced = schedule.respace(steps)
    # 1. x_T ~ N(0, I).
    x = seeded_normal(generators, shape, device=device, dtype=dtype)
    for i in _steps(range(spaced.num_steps - 1, 0, -1), progress, "ddpm"):
        # 2. μ_θ(x_t, t) from ε̂ (DDPM eq. 11 via x̂0 and eq. 7) and
        #    Σ_θ = exp(v·log β_t + (1 − v)·log β̃_t) (improved DDPM eq. 15), on the respaced β.
        p = _denoise(model, spaced, x, i, cond, clip_denoised)
        # 3. x_{t−1} = μ_θ + σ_t·z, z ~ N(0, I) (Algorithm 2, line 4).
        z = seeded_normal(generators, shape, device=device, dtype=dtype)
        x = p.mean + torch.exp(0.5 * p.log_variance) * z
    # 4. The last step (t = 1, index 0) returns the mean without noise (z = 0); it equals x̂0.
    return _denoise(model, spaced, x, 0, cond, clip_denoised).mean


@torch.no_grad()
def ddim_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    steps: int,
    generators: Sequence[torch.Generator],
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on ``steps`` respaced steps; η = 0 is deterministic.

    Parameters are those of :func:`ddpm_sample`; ``eta`` scales σ_t of eq. (16).
    """
    spaced = schedule.respace(steps)
    # 1. x_T ~ N(0, I).
    x = seeded_normal(generators, shape, device=device, dtype=dtype)
    for i in _steps(range(spaced.num_steps - 1, -1, -1), progress, "ddim"):
        # 2. x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t ("predicted x0" of eq. 12), ε̂ re-derived if clipped.
        p = _denoise(model, spaced, x, i, cond, clip_denoised)
        t = torch.full((shape[0],), i, dtype=torch.int64, device=x.device)
        alpha = spaced.coef("alphas_cumprod", t, x)
        alpha_prev = spaced.coef("alphas_cumprod_prev", t, x)
        # 3. σ_t(η) = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1}) (eq. 16).
        sigma = eta * torch.sqrt((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev))
        # 4. x_{t−1} = √ᾱ_{t−1}·x̂0 + √(1−ᾱ_{t−1}−σ_t²)·ε̂ + σ_t·z (eq. 12).
        x = torch.sqrt(alpha_prev) * p.pred_x0 + torch.sqrt(1 - alpha_prev - sigma**2) * p.pred_eps
        if eta > 0 and i > 0:
            x = x + sigma * seeded_normal(generators, shape, device=device, dtype=dtype)
    return x


def logsnr_timesteps(schedule: NoiseSchedule, steps: int) -> np.ndarray:
    """``steps`` decreasing integer timesteps from T−1 to 0, uniform in logSNR λ = log(α/σ).

    λ_t = ½·log(ᾱ_t/(1−ᾱ_t)) is spaced uniformly between λ_{T−1} and λ_0 (Lu et al. 2022a,
    §3.3) and each point is rounded to the nearest integer timestep. Ties (many steps near
    t = 0) are resolved by moving earlier points up, keeping the grid strictly decreasing;
    ``steps = T`` gives every timestep.
    """
    total = schedule.num_steps
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be in [1, {total}], got {steps}")
    ab = schedule.alphas_cumprod
    lam = 0.5 * (np.log(ab) - np.log1p(-ab))  # decreasing in t
    targets = np.linspace(lam[-1], lam[0], steps) if steps > 1 else lam[-1:]
    # λ is decreasing: search in its reversed (increasing) copy, pick the nearest neighbour.
    rev = lam[::-1]
    pos = np.clip(np.searchsorted(rev, targets), 1, total - 1)
    nearest = np.where(targets - rev[pos - 1] < rev[pos] - targets, pos - 1, pos)
    # Step k must leave room for the k steps above it and the steps − 1 − k below it.
    k = np.arange(steps)
    grid = np.clip(total - 1 - nearest, steps - 1 - k, total - 1 - k).astype(np.int64)
    grid[-1] = 0 if steps > 1 else total - 1
    for i in range(steps - 2, -1, -1):
        grid[i] = max(grid[i], grid[i + 1] + 1)
    return grid


@torch.no_grad()
def dpm_solver_pp_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    steps: int,
    generators: Sequence[torch.Generator],
    *,
    clip_denoised: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), data prediction, logSNR time grid.

    The model is evaluated once at each of the ``steps`` grid times t_0 = T−1 > … > t_{M−1} = 0
    (:func:`logsnr_timesteps`); the solver integrates the diffusion ODE between them with the
    multistep second-order update, the first step being first order, and ends with a first-order
    step from t_{M−1} to σ = 0, which returns the data prediction x̂0 there (as DDPM and DDIM do).
    Parameters are those of :func:`ddpm_sample`.
    """
    grid = logsnr_timesteps(schedule, steps)
    ab = schedule.alphas_cumprod[grid]
    alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
    lam = np.log(alpha) - np.log(sigma)
    # 1. x̃_{t_0} = x_T ~ N(0, I).
    x = seeded_normal(generators, shape, device=device, dtype=dtype)
    previous: Tensor | None = None
    for k in _steps(range(steps - 1), progress, "dpm-solver++"):
        # 2. Data prediction x_θ(x̃_{t_k}, t_k) (the denoiser's x̂0, clipped when requested).
        data = _denoise(model, schedule, x, int(grid[k]), cond, clip_denoised).pred_x0
        h = lam[k + 1] - lam[k]
        # 3. D = x_θ(t_0) on the first step (first order, = DDIM); afterwards the multistep
        #    D = (1 + 1/(2r))·x_θ(t_k) − 1/(2r)·x_θ(t_{k−1}) with r = h_{k−1}/h_k.
        if previous is None:
            d = data
        else:
            r = (lam[k] - lam[k - 1]) / h
            d = (1 + 1 / (2 * r)) * data - 1 / (2 * r) * previous
        # 4. x̃_{t_{k+1}} = (σ_{t_{k+1}}/σ_{t_k})·x̃_{t_k} − α_{t_{k+1}}·(e^{−h} − 1)·D.
        x = (sigma[k + 1] / sigma[k]) * x - alpha[k + 1] * np.expm1(-h) * d
        previous = data
    # 5. Final first-order step from t = 0 to σ = 0: x̃ = x_θ (the h → ∞ limit of step 4).
    return _denoise(model, schedule, x, int(grid[-1]), cond, clip_denoised).pred_x0


_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp": dpm_solver_pp_sample,
}


def count_network_evaluations(sampler: SamplerName, steps: int) -> int:
    """Network evaluations per sample: one per step for each of the three samplers."""
    if sampler not in _SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {list(_SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    return steps


def sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    *,
    sampler: SamplerName,
    steps: int,
    eta: float = 0.0,
    seeds: Sequence[int],
    device: torch.device | str,
    clip_denoised: bool = True,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """Draw ``shape[0]`` samples ``[B, G, H, W]`` of x0 with the named sampler.

    ``seeds[i]`` seeds sample i, so a sample is identical whether drawn alone or in a batch.
    ``eta`` is used by ``ddim`` only. ``schedule`` is the T-step schedule of training.
    For a residual process the samplers draw the residual and the LR offset is added here, so
    the result is always data.
    """
    if sampler not in _SAMPLERS:
        raise ValueError(
            f"unknown sampler {sampler!r}; expected one of {list(get_args(SamplerName))}"
        )
    if len(seeds) != shape[0]:
        raise ValueError(f"need one seed per sample: got {len(seeds)} seeds for batch {shape[0]}")
    generators = make_generators(seeds, device)
    extra = {"eta": eta} if sampler == "ddim" else {}
    x0 = _SAMPLERS[sampler](
        model,
        schedule,
        cond,
        shape,
        steps,
        generators,
        clip_denoised=clip_denoised,
        device=device,
        dtype=dtype,
        progress=progress,
        **extra,
    )
    offset = schedule.data_offset(cond, x0)
    return x0 if offset is None else x0 + offset


@torch.no_grad()
def posterior_mean_draws(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    *,
    seeds: Sequence[int],
    device: torch.device | str,
    clip_denoised: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draws of the network's estimate of E[x0 | condition], one network evaluation each.

    x_T ~ N(0, I) carries no information about x0, so the denoised estimate at the noisiest
    timestep, x̂0(x_T, T − 1), is the network's regression of x0 on the condition alone: the
    mean E[x0 | condition] for a squared-error objective, close to it (the median) for the
    Charbonnier one. The mean of these draws over x_T estimates the posterior mean with far less
    variance than the mean of K complete samples (Rao–Blackwellisation: each draw has already
    averaged out the sampling noise that a complete sample carries; by the tower property both
    estimate the same E[x0 | condition]). The result is on the model scale, so its inverse
    normalisation is the posterior mean of the *normalised* (log) expression: on the count scale
    it lies below the mean of the samples (Jensen), and PCC-type scores are what it is for.

    ``seeds[i]`` gives draw i the same x_T as :func:`sample` with that seed. Needs a v- or
    x0-parameterised network (``diffusion.prediction``): an ε-network's x̂0 at t = T divides
    its error by √ᾱ_T (0.006 for the linear schedule) and is meaningless.

    Returns
    -------
    Tensor
        ``[B, G, H, W]`` draws on the data scale (the LR offset of a residual process added).
    """
    if schedule.prediction == "eps":
        raise ValueError(
            "the posterior-mean estimate needs a v- or x0-parameterised network "
            "(diffusion.prediction='v' or 'x0'); this checkpoint predicts ε, whose x̂0 at "
            "t = T is ill-conditioned: use the mean of the samples instead"
        )
    if len(seeds) != shape[0]:
        raise ValueError(f"need one seed per draw: got {len(seeds)} seeds for batch {shape[0]}")
    x_t = seeded_normal(make_generators(seeds, device), shape, device=device, dtype=dtype)
    p = _denoise(model, schedule, x_t, schedule.num_steps - 1, cond, clip_denoised)
    offset = schedule.data_offset(cond, p.pred_x0)
    return p.pred_x0 if offset is None else p.pred_x0 + offset


@torch.no_grad()
def sample_groups(
    model: Denoiser,
    schedule: NoiseSchedule,
    cond: Any,
    shape: Sequence[int],
    n_samples: int,
    *,
    sampler: SamplerName,
    steps: int,
    seeds: Sequence[int],
    device: torch.device | str,
    eta: float = 0.0,
    clip_denoised: bool = True,
    posterior_mean: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """K samples per condition and, optionally, the posterior-mean estimate from the same x_T.

    ``cond`` holds each of B conditions K = ``n_samples`` times in a row (condition-major, as
    ``Condition.repeat(K)`` gives) and ``shape`` is ``[B·K, G, H, W]``; ``seeds`` has one seed
    per draw in the same order (:func:`sample`).

    Returns
    -------
    (samples, posterior)
        ``samples [B, K, G, H, W]`` from :func:`sample`; ``posterior [B, G, H, W]``, the mean
        over the K :func:`posterior_mean_draws` on the model scale, when ``posterior_mean``
        (else ``None``).
    """
    if shape[0] % n_samples:
        raise ValueError(f"batch {shape[0]} is not a multiple of n_samples={n_samples}")
    grouped = (shape[0] // n_samples, n_samples, *shape[1:])
    x0 = sample(
        model, schedule, cond, shape, sampler=sampler, steps=steps, eta=eta, seeds=seeds,
        device=device, clip_denoised=clip_denoised,
    )  # fmt: skip
    if not posterior_mean:
        return x0.reshape(grouped), None
    draws = posterior_mean_draws(
        model, schedule, cond, shape, seeds=seeds, device=device, clip_denoised=clip_denoised
    )
    return x0.reshape(grouped), draws.reshape(grouped).mean(1)
