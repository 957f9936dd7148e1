"""The residual process: diffuse x0 − lr_up, return data from the samplers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from diffst.diffusion import DiffusionConfig, NoiseSchedule, sample, training_losses
from tests.diffusion.conftest import TOY_MEAN, GaussianOracle, ode_endpoint


@dataclass
class Cond:
    """Condition with the LR map on the HR grid (may be larger than x: it is cropped)."""

    lr_up: Tensor | None
    disentangle_loss: Tensor | None = None


def residual_schedule(**kw: object) -> NoiseSchedule:
    return NoiseSchedule.from_config(DiffusionConfig(target="residual", **kw))  # type: ignore[arg-type]


def test_residual_flag_survives_respacing() -> None:
    sched = residual_schedule()
    assert sched.residual and sched.respace(10).residual and sched.respace(1000).residual
    assert not NoiseSchedule.from_config(DiffusionConfig()).residual


def test_samplers_return_data_equal_to_residual_samples_plus_offset() -> None:
    plain = NoiseSchedule.from_config(DiffusionConfig(num_steps=100))
    resid = residual_schedule(num_steps=100)
    oracle = GaussianOracle(plain.alphas_cumprod)
    offset = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(1)) * 0.1
    cond = Cond(lr_up=torch.nn.functional.pad(offset, (0, 2, 0, 2), value=9.0))
    for sampler in ("ddpm", "ddim", "dpmpp"):
        kw = dict(sampler=sampler, steps=10, seeds=[3, 4], device="cpu", clip_denoised=False)
        base = sample(oracle, plain, Cond(None), (2, 2, 5, 5), **kw)  # type: ignore[arg-type]
        got = sample(oracle, resid, cond, (2, 2, 5, 5), **kw)  # type: ignore[arg-type]
        torch.testing.assert_close(got, base + offset, rtol=0, atol=1e-6)


def test_ddim_with_many_steps_lands_on_the_shifted_ode_endpoint() -> None:
    resid = residual_schedule(num_steps=200)
    oracle = GaussianOracle(resid.alphas_cumprod)
    shift = torch.full((1, 2, 4, 4), 0.25)
    x = sample(oracle, resid, Cond(shift), (1, 2, 4, 4), sampler="ddim", steps=200,
               seeds=[0], device="cpu", clip_denoised=False)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((1, 2, 4, 4), generator=g)
    expect = ode_endpoint(x_T, resid.alphas_cumprod).float() + shift
    assert torch.allclose(x, expect, atol=0.02)


def test_clipping_keeps_the_data_not_the_residual_in_range() -> None:
    resid = residual_schedule(num_steps=50)
    x_t = torch.zeros(1, 1, 2, 2)
    t = torch.tensor([10])
    ab = float(resid.alphas_cumprod[10])
    eps = torch.full_like(x_t, -5.0)  # x̂0 = (0 + √(1−ᾱ)·5)/√ᾱ ≫ 1
    offset = torch.full_like(x_t, 0.8)
    assert (1 - ab) ** 0.5 * 5 / ab**0.5 > 1.2  # unclipped data would leave [-1, 1]
    p = resid.p_mean_variance(eps, None, x_t, t, clip_denoised=True, offset=offset)
    assert torch.allclose(p.pred_x0, torch.full_like(x_t, 0.2))  # data clipped to 1 = 0.2 + 0.8


def test_loss_targets_the_residual() -> None:
    cfg = DiffusionConfig(num_steps=100, target="residual", learn_sigma=False, simple_loss="mse")
    sched = NoiseSchedule.from_config(cfg)
    shift = torch.full((2, 2, 3, 3), 0.5)
    x0 = shift + torch.tensor(TOY_MEAN).reshape(1, 2, 1, 1)
    mask = torch.ones(2, 1, 3, 3)
    seen: list[Tensor] = []

    def model(x_t: Tensor, t: Tensor, cond: object) -> object:
        seen.append(x_t)
        return GaussianOracle(sched.alphas_cumprod)(x_t, t, cond)

    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 0])
    terms = training_losses(model, sched, x0, Cond(shift), mask, cfg, g, t=t)  # type: ignore[arg-type]
    # at t = 0 x_t ≈ √ᾱ₀·(x0 − shift): the model sees the residual, centred on TOY_MEAN, not x0
    centre = seen[0].mean(dim=(0, 2, 3))
    assert torch.allclose(centre, torch.tensor(TOY_MEAN), atol=0.05)
    assert torch.isfinite(terms.total)
    # the oracle of the residual's distribution gives the irreducible ε-MSE only (≈ 1 − E[ε|x]²)
    assert float(terms.simple) < 1.0


def test_residual_without_lr_map_is_a_clear_error() -> None:
    resid = residual_schedule(num_steps=50)
    oracle = GaussianOracle(resid.alphas_cumprod)
    with pytest.raises(ValueError, match="lr_input_concat"):
        sample(oracle, resid, Cond(None), (1, 2, 2, 2), sampler="ddim", steps=2, seeds=[0],
               device="cpu")  # fmt: skip
