"""posterior_mean_draws: the network's E[x0 | condition] at the noisiest step, per draw."""

from __future__ import annotations

import pytest
import torch

from diffst.diffusion import DiffusionConfig, NoiseSchedule, posterior_mean_draws, sample
from tests.diffusion.conftest import TOY_MEAN, TOY_STD, GaussianOracle
from tests.diffusion.test_residual import Cond

SHAPE = (3, 2, 16, 16)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_draws_estimate_the_data_mean_with_much_less_spread_than_samples(prediction: str) -> None:
    schedule = NoiseSchedule.from_config(DiffusionConfig(prediction=prediction))  # type: ignore[arg-type]
    oracle = GaussianOracle(schedule.alphas_cumprod, prediction=prediction)
    kw = dict(seeds=[1, 2, 3], device="cpu", clip_denoised=False, dtype=torch.float64)
    draws = posterior_mean_draws(oracle, schedule, None, SHAPE, **kw)  # type: ignore[arg-type]
    samples = sample(oracle, schedule, None, SHAPE, sampler="ddim", steps=50, **kw)  # type: ignore[arg-type]
    for g, (mu, s) in enumerate(zip(TOY_MEAN, TOY_STD, strict=True)):
        # E[x0 | x_T] = μ + a·s²·(x_T − aμ)/(a²s² + σ²) with a = √ᾱ_T ≈ 0.006: the data mean
        assert draws[:, g].mean().item() == pytest.approx(mu, abs=1e-3)
        assert draws[:, g].std().item() < 0.01 * s
        # a complete sample has the data's spread
        assert samples[:, g].std().item() == pytest.approx(s, rel=0.15)
    assert oracle.calls == 1 + 50  # one network evaluation for all draws


def test_seeds_fix_each_draw_whatever_the_batch() -> None:
    schedule = NoiseSchedule.from_config(DiffusionConfig(prediction="v"))
    oracle = GaussianOracle(schedule.alphas_cumprod, prediction="v")
    both = posterior_mean_draws(oracle, schedule, None, (2, 2, 4, 4), seeds=[5, 6], device="cpu")
    one = posterior_mean_draws(oracle, schedule, None, (1, 2, 4, 4), seeds=[6], device="cpu")
    torch.testing.assert_close(both[1:], one, rtol=0, atol=1e-6)
    assert not torch.equal(both[0], both[1])


def test_residual_process_adds_the_lr_offset() -> None:
    plain = NoiseSchedule.from_config(DiffusionConfig(prediction="v"))
    resid = NoiseSchedule.from_config(DiffusionConfig(prediction="v", target="residual"))
    oracle = GaussianOracle(plain.alphas_cumprod, prediction="v")
    offset = torch.linspace(-0.2, 0.2, 2 * 2 * 4 * 4).reshape(2, 2, 4, 4)
    kw = dict(seeds=[1, 2], device="cpu", clip_denoised=False)
    base = posterior_mean_draws(oracle, plain, Cond(None), (2, 2, 4, 4), **kw)  # type: ignore[arg-type]
    got = posterior_mean_draws(oracle, resid, Cond(offset), (2, 2, 4, 4), **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(got, base + offset, rtol=0, atol=1e-6)


def test_eps_networks_and_seed_mismatch_are_refused() -> None:
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    oracle = GaussianOracle(schedule.alphas_cumprod)
    with pytest.raises(ValueError, match="v- or x0-parameterised"):
        posterior_mean_draws(oracle, schedule, None, (1, 2, 4, 4), seeds=[0], device="cpu")
    v = NoiseSchedule.from_config(DiffusionConfig(prediction="v"))
    with pytest.raises(ValueError, match="one seed per draw"):
        posterior_mean_draws(oracle, v, None, (2, 2, 4, 4), seeds=[0], device="cpu")


def test_sample_groups_groups_draws_by_condition() -> None:
    from diffst.diffusion import sample_groups

    schedule = NoiseSchedule.from_config(DiffusionConfig(prediction="v"))
    oracle = GaussianOracle(schedule.alphas_cumprod, prediction="v")
    shape, seeds = (6, 2, 4, 4), [3, 4, 5, 6, 7, 8]
    kw = dict(seeds=seeds, device="cpu", clip_denoised=False)
    samples, posterior = sample_groups(
        oracle,
        schedule,
        None,
        shape,
        3,
        sampler="ddim",
        steps=5,
        posterior_mean=True,
        **kw,  # type: ignore[arg-type]
    )
    flat = sample(oracle, schedule, None, shape, sampler="ddim", steps=5, **kw)  # type: ignore[arg-type]
    draws = posterior_mean_draws(oracle, schedule, None, shape, **kw)  # type: ignore[arg-type]
    assert samples.shape == (2, 3, 2, 4, 4) and posterior is not None
    torch.testing.assert_close(samples, flat.reshape(2, 3, 2, 4, 4), rtol=0, atol=0)
    torch.testing.assert_close(posterior, draws.reshape(2, 3, 2, 4, 4).mean(1), rtol=0, atol=0)
    none = sample_groups(oracle, schedule, None, shape, 3, sampler="ddim", steps=5, **kw)[1]  # type: ignore[arg-type]
    assert none is None
    with pytest.raises(ValueError, match="multiple of n_samples"):
        sample_groups(oracle, schedule, None, shape, 4, sampler="ddim", steps=5, **kw)  # type: ignore[arg-type]
