"""Diffusion maths: noise schedule, training losses and samplers (tensors in, tensors out).

>>> from diffst.diffusion import DiffusionConfig, NoiseSchedule, training_losses, sample
>>> schedule = NoiseSchedule.from_config(DiffusionConfig())
"""

from diffst.diffusion.config import DiffusionConfig
from diffst.diffusion.losses import LossTerms, draw_timesteps_and_noise, training_losses
from diffst.diffusion.samplers import (
    count_network_evaluations,
    ddim_sample,
    ddpm_sample,
    dpm_solver_pp_sample,
    make_generators,
    posterior_mean_draws,
    sample,
    sample_groups,
)
from diffst.diffusion.schedule import Denoiser, NoiseSchedule, PMeanVariance

__all__ = [
    "Denoiser",
    "DiffusionConfig",
    "LossTerms",
    "NoiseSchedule",
    "PMeanVariance",
    "count_network_evaluations",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_sample",
    "draw_timesteps_and_noise",
    "make_generators",
    "posterior_mean_draws",
    "sample",
    "sample_groups",
    "training_losses",
]
