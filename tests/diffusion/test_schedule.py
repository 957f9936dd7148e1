"""NoiseSchedule: β schedules, forward process, conversions, posterior, respacing, VB helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffst.config import ConfigError, from_dict
from diffst.diffusion import DiffusionConfig, NoiseSchedule
from diffst.diffusion.schedule import (
    discretised_gaussian_log_likelihood,
    gaussian_log_likelihood,
    make_betas,
    normal_kl,
)


def test_linear_betas_match_ddpm_and_scale_with_t() -> None:
    betas = make_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    half = make_betas("linear", 500)
    assert half[0] == pytest.approx(2e-4) and half[-1] == pytest.approx(0.04)


def test_cosine_alphas_cumprod_follow_the_closed_form() -> None:
    T = 1000
    s = NoiseSchedule(make_betas("cosine", T))
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * math.pi / 2) ** 2
    # Before the β clip at 0.999 (last few steps), ᾱ_t = f(t)/f(0) exactly.
    np.testing.assert_allclose(s.alphas_cumprod[:990], (f[1:] / f[0])[:990], rtol=1e-10)
    assert s.betas.max() <= 0.999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alphas_cumprod_strictly_decrease_inside_unit_interval(name: str) -> None:
    ab = NoiseSchedule(make_betas(name, 1000)).alphas_cumprod
    assert (np.diff(ab) < 0).all()
    assert 0 < ab[-1] < 1e-3 and ab[0] < 1


def test_q_sample_moments_match_closed_form(schedule: NoiseSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7, dtype=torch.float64)
    for step in (0, 250, 999):
        t = torch.full((n,), step)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        x_t = schedule.q_sample(x0, t, noise)
        ab = schedule.alphas_cumprod[step]
        se = math.sqrt((1 - ab) / n)
        assert abs(x_t.mean().item() - math.sqrt(ab) * 0.7) < 5 * se
        assert x_t.var().item() == pytest.approx(1 - ab, rel=0.02)


def test_x0_eps_v_conversions_invert(schedule: NoiseSchedule) -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand((4, 3, 5, 5), generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, t, eps), x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, t, x0), eps, rtol=0, atol=1e-10)
    v = schedule.v_target(x0, eps, t)
    torch.testing.assert_close(schedule.x0_from_v(x_t, t, v), x0, rtol=0, atol=1e-12)
    v_schedule = NoiseSchedule(schedule.betas, prediction="v")
    torch.testing.assert_close(v_schedule.predict_x0(v, x_t, t), x0, rtol=0, atol=1e-12)
    assert v_schedule.target(x0, eps, t) is not eps
    torch.testing.assert_close(v_schedule.target(x0, eps, t), v)
    x0_schedule = NoiseSchedule(schedule.betas, prediction="x0")
    assert x0_schedule.predict_x0(x0, x_t, t) is x0 and x0_schedule.target(x0, eps, t) is x0


def test_respace_to_all_steps_is_the_original(schedule: NoiseSchedule) -> None:
    same = schedule.respace(1000)
    np.testing.assert_array_equal(same.betas, schedule.betas)
    np.testing.assert_array_equal(same.timestep_map, np.arange(1000))
    np.testing.assert_array_equal(same.alphas_cumprod, schedule.alphas_cumprod)


def test_respace_keeps_alphas_cumprod_at_selected_steps(schedule: NoiseSchedule) -> None:
    spaced = schedule.respace(20)
    assert spaced.num_steps == 20
    assert spaced.timestep_map[0] == 0 and spaced.timestep_map[-1] == 999
    assert (np.diff(spaced.timestep_map) > 0).all()
    np.testing.assert_allclose(
        spaced.alphas_cumprod, schedule.alphas_cumprod[spaced.timestep_map], rtol=1e-12
    )
    # Respacing a respaced schedule composes the maps to original timesteps.
    twice = spaced.respace(5)
    np.testing.assert_allclose(
        twice.alphas_cumprod, schedule.alphas_cumprod[twice.timestep_map], rtol=1e-12
    )
    assert set(twice.timestep_map) <= set(spaced.timestep_map)
    np.testing.assert_array_equal(schedule.respace(1).timestep_map, [999])
    t = torch.tensor([0, 19])
    assert schedule.respace(20).model_timesteps(t).tolist() == [0, 999]


@pytest.mark.parametrize("steps", [0, 1001])
def test_respace_rejects_bad_step_counts(schedule: NoiseSchedule, steps: int) -> None:
    with pytest.raises(ValueError, match="steps must be in"):
        schedule.respace(steps)


def test_posterior_mean_of_noise_free_path_and_at_t0(schedule: NoiseSchedule) -> None:
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(1, 2, 2, 2).repeat(3, 1, 1, 1)
    t = torch.tensor([0, 1, 700])
    x_t = schedule.q_sample(x0, t, torch.zeros_like(x0))
    mean, log_var = schedule.q_posterior(x0, x_t, t)
    expected = torch.from_numpy(schedule.alphas_cumprod_prev[t.numpy()]).sqrt()
    torch.testing.assert_close(mean, expected.reshape(-1, 1, 1, 1) * x0)
    torch.testing.assert_close(mean[0], x0[0])  # at t = 0 the posterior mean is x0
    assert log_var[0, 0, 0, 0].item() == pytest.approx(math.log(schedule.posterior_variance[1]))


def test_posterior_matches_monte_carlo_regression(schedule: NoiseSchedule) -> None:
    """Draw x_{t−1} ~ q(·|x0), x_t ~ q(·|x_{t−1}); regress x_{t−1} on x_t given x0."""
    gen = torch.Generator().manual_seed(3)
    step, n, x0 = 300, 400_000, 5.0
    ab_prev = schedule.alphas_cumprod[step - 1]
    beta = schedule.betas[step]
    x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * torch.randn(n, generator=gen)
    x_t = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * torch.randn(n, generator=gen)
    x_t, x_prev = x_t.double(), x_prev.double()
    slope = torch.cov(torch.stack([x_t, x_prev]))[0, 1] / x_t.var()
    resid = x_prev - slope * x_t
    assert slope.item() == pytest.approx(schedule.posterior_mean_coef2[step], rel=0.01)
    assert resid.var().item() == pytest.approx(schedule.posterior_variance[step], rel=0.01)
    intercept = (x_prev - schedule.posterior_mean_coef2[step] * x_t).mean() / x0
    assert intercept.item() == pytest.approx(schedule.posterior_mean_coef1[step], rel=0.02)


def test_p_mean_variance_with_true_eps_recovers_posterior(schedule: NoiseSchedule) -> None:
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand((2, 3, 4, 4), generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([5, 900])
    x_t = schedule.q_sample(x0, t, eps)
    p = schedule.p_mean_variance(eps, None, x_t, t, clip_denoised=False)
    mean, log_var = schedule.q_posterior(x0, x_t, t)
    torch.testing.assert_close(p.pred_x0, x0)
    torch.testing.assert_close(p.pred_eps, eps)
    torch.testing.assert_close(p.mean, mean)
    torch.testing.assert_close(p.log_variance, log_var)
    clipped = schedule.p_mean_variance(eps * 50, None, x_t, t, clip_denoised=True)
    assert clipped.pred_x0.abs().max() <= 1.0


def test_learned_variance_interpolates_between_posterior_and_beta(
    schedule: NoiseSchedule,
) -> None:
    like = torch.zeros((3, 1, 2, 2), dtype=torch.float64)
    t = torch.tensor([0, 10, 999])
    lo = schedule.model_log_variance(-torch.ones_like(like), t, like)
    hi = schedule.model_log_variance(torch.ones_like(like), t, like)
    mid = schedule.model_log_variance(torch.zeros_like(like), t, like)
    expect_lo = np.log(np.append(schedule.posterior_variance[1], schedule.posterior_variance[1:]))
    torch.testing.assert_close(lo[:, 0, 0, 0], torch.from_numpy(expect_lo[[0, 10, 999]]))
    torch.testing.assert_close(
        hi[:, 0, 0, 0], torch.from_numpy(np.log(schedule.betas[[0, 10, 999]]))
    )
    torch.testing.assert_close(mid, (lo + hi) / 2)
    torch.testing.assert_close(schedule.model_log_variance(None, t, like), lo)
    assert (hi[1:] > lo[1:]).all()  # β_t > β̃_t for t > 0


def test_normal_kl_and_gaussian_likelihoods() -> None:
    z = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(normal_kl(z, z, z, z), z)
    # KL(N(0, 1) ‖ N(1, 1)) = 1/2; KL(N(0, 1) ‖ N(0, e²)) = (2 + e^{-2} − 1)/2.
    assert normal_kl(z, z, z + 1, z)[0].item() == pytest.approx(0.5)
    assert normal_kl(z, z, z, z + 2)[0].item() == pytest.approx(0.5 * (1 + math.exp(-2)))
    x, m, lv = torch.tensor([0.3]), torch.tensor([-0.2]), torch.tensor([math.log(0.04)])
    ref = torch.distributions.Normal(m, lv.exp().sqrt()).log_prob(x)
    torch.testing.assert_close(gaussian_log_likelihood(x, m, lv), ref)
    centres = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretised_gaussian_log_likelihood(
        centres, torch.full_like(centres, 0.1), torch.full_like(centres, math.log(0.09))
    )
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_config_defaults_validation_and_yaml_types() -> None:
    cfg = DiffusionConfig()
    assert (cfg.num_steps, cfg.beta_schedule, cfg.prediction, cfg.learn_sigma) == (
        1000,
        "linear",
        "eps",
        True,
    )
    assert (cfg.charbonnier_eps, cfg.vb_weight, cfg.disentangle_weight) == (1e-3, 1e-3, 0.01)
    assert (cfg.sampler, cfg.sampling_steps) == ("ddpm", 20)
    with pytest.raises(ConfigError, match=r"diffusion\.sampling_steps"):
        DiffusionConfig(sampling_steps=2000)
    with pytest.raises(ConfigError, match=r"diffusion\.beta_schedule"):
        DiffusionConfig(beta_schedule="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"diffusion\.vb_weight"):
        DiffusionConfig(vb_weight=-1)
    parsed = from_dict(DiffusionConfig, {"prediction": "v", "ddim_eta": "0.5"})
    assert parsed.prediction == "v" and parsed.ddim_eta == 0.5
    v = NoiseSchedule.from_config(parsed)
    assert v.prediction == "v" and v.num_steps == 1000


def test_schedule_rejects_bad_betas() -> None:
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="prediction"):
        NoiseSchedule(np.array([0.1, 0.2]), prediction="x_start")  # type: ignore[arg-type]
