"""Configuration of the diffusion process, its training objective and its default sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from diffst.config import ConfigError

__all__ = ["BetaSchedule", "DiffusionConfig", "DiffusionTarget", "Prediction", "SamplerName"]

BetaSchedule = Literal["linear", "cosine"]
Prediction = Literal["eps", "v", "x0"]
SamplerName = Literal["ddpm", "ddim", "dpmpp"]
DiffusionTarget = Literal["hr", "residual", "mean"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "beta_schedule": get_args(BetaSchedule),
    "prediction": get_args(Prediction),
    "simple_loss": ("charbonnier", "mse"),
    "decoder_nll": ("gaussian", "discretised"),
    "sampler": get_args(SamplerName),
    "target": get_args(DiffusionTarget),
}


@dataclass(frozen=True)
class DiffusionConfig:
    """Forward process, loss and sampling defaults (paper values as defaults).

    The paper (Diff-ST, MICCAI 2024) and its released configuration use T = 1000, the linear β
    schedule, ε-prediction, learned-range variances with the hybrid objective of improved DDPM
    (Nichol & Dhariwal 2021) and a Charbonnier penalty ``sqrt(d² + 1e-6)`` as the simple loss,
    i.e. ``charbonnier_eps = 1e-3``; sampling uses 20 respaced ancestral steps.
    """

    num_steps: int = 1000
    """T, the number of diffusion steps of the forward process."""
    beta_schedule: BetaSchedule = "linear"
    """``linear``: β from 1e-4 to 0.02 (Ho et al. 2020), both scaled by 1000/T as in improved DDPM;
    ``cosine``: improved DDPM eq. (17) with offset s = 0.008 and β ≤ 0.999."""
    target: DiffusionTarget = "hr"
    """What is diffused: the HR map itself (paper); its residual over the LR map copied onto the
    HR grid (``x0 − lr_up``, as in residual super-resolution diffusion; needs
    ``model.lr_input_concat``); or ``mean``, its residual over the network's own regression of
    the HR map from the condition (``x0 − μ``, μ from ``model.mean_head``, trained by a masked
    squared error with weight ``mean_weight``), as in corrective diffusion for downscaling
    (Mardani et al., CorrDiff): μ carries the point prediction with a full regression gradient at
    every step, and the diffusion generates only the spread around it."""
    mean_weight: float = 1.0
    """Weight of the squared error of μ (``target='mean'``) in the total loss."""
    prediction: Prediction = "eps"
    """What the network predicts: the noise ε (paper), v = √ᾱ·ε − √(1−ᾱ)·x0 (Salimans & Ho
    2022), or x0 itself. With ``x0`` the network output at large t is directly the regression
    estimate E[x0 | x_t, condition], which stays well conditioned where ε-prediction divides by
    √ᾱ_t → 0."""
    learn_sigma: bool = True
    """The network also outputs v ∈ [-1, 1] interpolating log β and log β̃ (improved DDPM eq. 15);
    when False the reverse variance is fixed to the posterior variance β̃."""
    t_max_share: float = 0.0
    """Share of each batch trained at the last step t = T − 1 instead of t ~ U{0, …, T−1} (0: the
    paper's uniform draw). At t = T − 1 the input carries no information about x0, so the network
    output is the regression estimate E[x0 | condition] that the posterior-mean point prediction
    reads (``diffusion.posterior_mean_draws``); with t uniform only ~0.1 % of draws train it."""
    simple_loss: Literal["charbonnier", "mse"] = "charbonnier"
    """Penalty on the prediction error d: ``sqrt(d² + eps²)`` (paper) or ``d²`` (DDPM L_simple)."""
    charbonnier_eps: float = 1e-3
    """ε of the Charbonnier penalty; the release adds 1e-6 = ε² under the square root."""
    vb_weight: float = 0.001
    """λ of L_hybrid = L_simple + λ·L_vb (improved DDPM); the per-t estimate of L_vb is T·L_t in
    bits per bin, so with T = 1000 the sampled KL enters with weight 1 as in the release."""
    decoder_nll: Literal["gaussian", "discretised"] = "gaussian"
    """Decoder term L_0 of L_vb: continuous Gaussian NLL (our normalised data are continuous) or
    the 8-bit discretised Gaussian of Ho et al. (2020) used by image models and the release."""
    disentangle_weight: float = 0.01
    """Weight of the disentangling loss MSE(common) / MSE(distinct) (paper and release: 0.01)."""
    clip_denoised: bool = True
    """Clip predicted x0 to [-1, 1] while sampling (data are normalised to [-1, 1])."""
    sampler: SamplerName = "ddpm"
    """Default sampler: ancestral ``ddpm`` (paper), ``ddim`` or DPM-Solver++(2M) ``dpmpp``."""
    sampling_steps: int = 20
    """Default number of sampling steps (network evaluations); the paper uses 20 respaced steps."""
    ddim_eta: float = 0.0
    """η of DDIM (Song et al. 2021, eq. 16): 0 is deterministic, 1 matches DDPM's variance."""

    def __post_init__(self) -> None:
        for name, valid in _CHOICES.items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"diffusion.{name}: {getattr(self, name)!r} is not one of {list(valid)}"
                )
        if self.num_steps < 2:
            raise ConfigError(f"diffusion.num_steps: must be ≥ 2, got {self.num_steps}")
        if not 1 <= self.sampling_steps <= self.num_steps:
            raise ConfigError(
                f"diffusion.sampling_steps: must be in [1, num_steps={self.num_steps}], "
                f"got {self.sampling_steps}"
            )
        if self.charbonnier_eps <= 0:
            raise ConfigError(f"diffusion.charbonnier_eps: must be > 0, got {self.charbonnier_eps}")
        if not 0.0 <= self.t_max_share < 1.0:
            raise ConfigError(f"diffusion.t_max_share: must be in [0, 1), got {self.t_max_share}")
        for name in ("vb_weight", "disentangle_weight", "ddim_eta", "mean_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"diffusion.{name}: must be ≥ 0, got {getattr(self, name)}")
