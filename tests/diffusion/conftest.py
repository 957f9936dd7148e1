"""Analytic denoisers for data whose posterior is known in closed form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from diffst.diffusion import DiffusionConfig, NoiseSchedule

#: Per-gene mean and standard deviation of the toy data x0 ~ N(μ_g, s_g²) (inside [-1, 1]).
TOY_MEAN = (0.3, -0.4)
TOY_STD = (0.2, 0.25)


@dataclass
class Output:
    """Minimal denoiser output."""

    prediction: Tensor
    variance: Tensor | None


class GaussianOracle:
    """Exact E[ε | x_t] (or E[v | x_t]) for x0 ~ N(μ_g, s_g²) independently per bin.

    With a = √ᾱ_t, σ = √(1−ᾱ_t): x_t ~ N(aμ, a²s² + σ²), so
    E[ε | x_t] = σ·(x_t − aμ)/(a²s² + σ²) and E[x0 | x_t] = μ + a·s²·(x_t − aμ)/(a²s² + σ²).
    ``t`` is the original timestep, as the denoiser receives it.
    """

    def __init__(
        self,
        alphas_cumprod: np.ndarray,
        prediction: str = "eps",
        variance: float | None = None,
    ) -> None:
        self.ab = torch.from_numpy(alphas_cumprod)
        self.prediction = prediction
        self.variance = variance
        self.calls = 0

    def posterior(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """E[ε | x_t] and E[x0 | x_t]."""
        shape = (-1, 1, 1, 1)
        ab = self.ab[t].to(x_t.dtype).reshape(shape)
        a, sigma = ab.sqrt(), (1 - ab).sqrt()
        mu = torch.tensor(TOY_MEAN, dtype=x_t.dtype).reshape(1, -1, 1, 1)
        s2 = torch.tensor(TOY_STD, dtype=x_t.dtype).reshape(1, -1, 1, 1) ** 2
        resid = (x_t - a * mu) / (a * a * s2 + sigma * sigma)
        return sigma * resid, mu + a * s2 * resid

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> Output:
        self.calls += 1
        eps, x0 = self.posterior(x_t, t)
        if self.prediction == "v":
            ab = self.ab[t].to(x_t.dtype).reshape(-1, 1, 1, 1)
            pred = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        elif self.prediction == "x0":
            pred = x0
        else:
            pred = eps
        var = None if self.variance is None else torch.full_like(x_t, self.variance)
        return Output(prediction=pred, variance=var)


def ode_endpoint(x_T: Tensor, alphas_cumprod: np.ndarray) -> Tensor:
    """Where the probability-flow ODE takes x_T for the Gaussian toy data, then E[x0 | x_{t=0}].

    The flow map of a Gaussian is affine: (x_t − a_t μ)/√(a_t² s² + σ_t²) is constant along a
    trajectory. The samplers return the data prediction at index 0, which is applied last.
    """
    mu = torch.tensor(TOY_MEAN, dtype=torch.float64).reshape(1, -1, 1, 1)
    s2 = torch.tensor(TOY_STD, dtype=torch.float64).reshape(1, -1, 1, 1) ** 2
    ab_t, ab_0 = float(alphas_cumprod[-1]), float(alphas_cumprod[0])
    z = (x_T.double() - ab_t**0.5 * mu) / (ab_t * s2 + 1 - ab_t).sqrt()
    x_first = ab_0**0.5 * mu + z * (ab_0 * s2 + 1 - ab_0).sqrt()
    return mu + ab_0**0.5 * s2 * (x_first - ab_0**0.5 * mu) / (ab_0 * s2 + 1 - ab_0)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    """The paper's 1000-step linear ε schedule."""
    return NoiseSchedule.from_config(DiffusionConfig())
