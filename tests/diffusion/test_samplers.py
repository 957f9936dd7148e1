"""Samplers on a toy problem with an analytic denoiser: agreement, determinism, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from diffst.diffusion import NoiseSchedule, count_network_evaluations, sample
from diffst.diffusion.samplers import logsnr_timesteps, make_generators, seeded_normal

from .conftest import TOY_MEAN, TOY_STD, GaussianOracle, Output, ode_endpoint

SHAPE = (2, 2, 32, 32)  # 2 × 32 × 32 = 2048 independent draws per gene
SEEDS = [11, 12]


def _draw(schedule: NoiseSchedule, sampler: str, steps: int, **kwargs: object) -> Tensor:
    model = GaussianOracle(schedule.alphas_cumprod, **kwargs)  # type: ignore[arg-type]
    return sample(
        model,
        schedule,
        None,
        SHAPE,
        sampler=sampler,  # type: ignore[arg-type]
        steps=steps,
        seeds=SEEDS,
        device="cpu",
        clip_denoised=False,
        dtype=torch.float64,
    )


def _assert_matches_toy_distribution(x: Tensor, std_rel: float = 0.06) -> None:
    n = x.numel() // x.shape[1]
    for g, (mu, s) in enumerate(zip(TOY_MEAN, TOY_STD, strict=True)):
        assert abs(x[:, g].mean().item() - mu) < 4 * s / np.sqrt(n)
        assert x[:, g].std().item() == pytest.approx(s, rel=std_rel)


@pytest.fixture(scope="module")
def ode_reference(schedule: NoiseSchedule) -> Tensor:
    x_T = seeded_normal(make_generators(SEEDS, "cpu"), SHAPE, device="cpu", dtype=torch.float64)
    return ode_endpoint(x_T, schedule.alphas_cumprod)


@pytest.mark.parametrize("variance", [None, -1.0, 1.0])
def test_ddpm_1000_steps_reproduces_the_data_distribution(
    schedule: NoiseSchedule, variance: float | None
) -> None:
    """Fixed β̃, and the two ends of the learned range (β̃ and β), are all exact as T → ∞."""
    _assert_matches_toy_distribution(_draw(schedule, "ddpm", 1000, variance=variance))


def test_ddim_eta1_is_stochastic_and_matches_the_data(schedule: NoiseSchedule) -> None:
    model = GaussianOracle(schedule.alphas_cumprod)
    x = sample(
        model, schedule, None, SHAPE, sampler="ddim", steps=1000, eta=1.0, seeds=SEEDS,
        device="cpu", clip_denoised=False, dtype=torch.float64,
    )  # fmt: skip
    _assert_matches_toy_distribution(x)
    deterministic = _draw(schedule, "ddim", 1000)
    assert (x - deterministic).abs().mean() > 0.05


def test_deterministic_samplers_follow_the_probability_flow_ode(
    schedule: NoiseSchedule, ode_reference: Tensor
) -> None:
    """DDIM (η = 0) and DPM-Solver++ converge to the analytic ODE map of each x_T."""
    ddim = _draw(schedule, "ddim", 1000)
    dpmpp = _draw(schedule, "dpmpp", 100)
    assert (ddim - ode_reference).abs().max() < 0.01
    assert (dpmpp - ode_reference).abs().max() < 0.002
    assert (ddim - dpmpp).abs().max() < 0.01
    _assert_matches_toy_distribution(dpmpp)


def test_dpmpp_10_steps_is_already_close(schedule: NoiseSchedule, ode_reference: Tensor) -> None:
    dpmpp = _draw(schedule, "dpmpp", 10)
    ddim = _draw(schedule, "ddim", 10)
    assert (dpmpp - ode_reference).abs().max() < 0.04
    _assert_matches_toy_distribution(dpmpp, std_rel=0.05)
    rms = lambda x: (x - ode_reference).pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(dpmpp) < rms(ddim) / 5


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_v_and_x0_prediction_give_the_same_samples(
    schedule: NoiseSchedule, prediction: str
) -> None:
    other = NoiseSchedule(schedule.betas, prediction=prediction)  # type: ignore[arg-type]
    for sampler in ("ddpm", "ddim", "dpmpp"):
        eps = _draw(schedule, sampler, 20)
        drawn = _draw(other, sampler, 20, prediction=prediction)
        torch.testing.assert_close(drawn, eps, rtol=0, atol=1e-9)


def test_ddim_eta0_is_deterministic_given_seeds(schedule: NoiseSchedule) -> None:
    a, b = _draw(schedule, "ddim", 15), _draw(schedule, "ddim", 15)
    assert torch.equal(a, b)
    model = GaussianOracle(schedule.alphas_cumprod)
    other = sample(
        model, schedule, None, SHAPE, sampler="ddim", steps=15, seeds=[1, 2], device="cpu",
        clip_denoised=False, dtype=torch.float64,
    )  # fmt: skip
    assert not torch.allclose(a, other)


@pytest.mark.parametrize(
    ("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmpp", 0.0)]
)
def test_samples_do_not_depend_on_batch_size(
    schedule: NoiseSchedule, sampler: str, eta: float
) -> None:
    model = GaussianOracle(schedule.alphas_cumprod, variance=0.2)
    shape = (2, 2, 4, 4)
    kw = {"sampler": sampler, "steps": 12, "eta": eta, "device": "cpu"}
    both = sample(model, schedule, None, shape, seeds=[7, 8], **kw)  # type: ignore[arg-type]
    alone = [sample(model, schedule, None, (1, 2, 4, 4), seeds=[s], **kw) for s in (7, 8)]  # type: ignore[arg-type]
    torch.testing.assert_close(both, torch.cat(alone), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_network_evaluations_are_counted(schedule: NoiseSchedule, sampler: str, steps: int) -> None:
    model = GaussianOracle(schedule.alphas_cumprod)
    x = sample(
        model, schedule, None, (1, 2, 2, 2), sampler=sampler, steps=steps, seeds=[0], device="cpu"
    )  # type: ignore[arg-type]
    assert model.calls == count_network_evaluations(sampler, steps)  # type: ignore[arg-type]
    assert x.shape == (1, 2, 2, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_model_receives_original_timesteps(schedule: NoiseSchedule) -> None:
    seen: list[int] = []

    def spy(x_t: Tensor, t: Tensor, cond: object) -> Output:
        assert t.dtype == torch.int64 and t.shape == (x_t.shape[0],)
        seen.append(int(t[0]))
        return Output(torch.zeros_like(x_t), None)

    sample(spy, schedule, None, (1, 1, 2, 2), sampler="ddpm", steps=4, seeds=[0], device="cpu")
    assert seen == [999, 666, 333, 0]
    seen.clear()
    sample(spy, schedule, None, (1, 1, 2, 2), sampler="dpmpp", steps=4, seeds=[0], device="cpu")
    assert seen == logsnr_timesteps(schedule, 4).tolist()


def test_logsnr_grid_is_uniform_in_lambda_and_strictly_decreasing(schedule: NoiseSchedule) -> None:
    ab = schedule.alphas_cumprod
    lam = 0.5 * np.log(ab / (1 - ab))
    grid = logsnr_timesteps(schedule, 10)
    assert grid[0] == 999 and grid[-1] == 0 and len(grid) == 10
    steps = np.diff(lam[grid])
    assert steps.min() > 0 and steps.max() / steps.min() < 1.2
    dense = logsnr_timesteps(schedule, 400)
    assert len(dense) == 400 and (np.diff(dense) < 0).all() and dense[0] == 999
    np.testing.assert_array_equal(logsnr_timesteps(schedule, 1000), np.arange(999, -1, -1))
    np.testing.assert_array_equal(logsnr_timesteps(schedule, 1), [999])


def test_clipping_keeps_samples_in_range(schedule: NoiseSchedule) -> None:
    def wild(x_t: Tensor, t: Tensor, cond: object) -> Output:
        return Output(torch.full_like(x_t, -30.0), torch.zeros_like(x_t))

    for sampler in ("ddpm", "ddim", "dpmpp"):
        x = sample(
            wild, schedule, None, (1, 1, 3, 3), sampler=sampler, steps=5, seeds=[0], device="cpu"
        )  # type: ignore[arg-type]
        assert x.abs().max() <= 1.0
        raw = sample(
            wild,
            schedule,
            None,
            (1, 1, 3, 3),
            sampler=sampler,
            steps=5,
            seeds=[0],
            device="cpu",
            clip_denoised=False,
        )  # type: ignore[arg-type]
        assert raw.abs().max() > 1.0


def test_pinned_values_per_sampler(schedule: NoiseSchedule) -> None:
    """Fixed-seed full loops; any change to a sampler's arithmetic shows up here."""
    model = GaussianOracle(schedule.alphas_cumprod, variance=0.5)
    got = {
        name: sample(
            model,
            schedule,
            None,
            (1, 2, 1, 2),
            sampler=name,
            steps=20,
            seeds=[3],
            device="cpu",
            dtype=torch.float64,
        )
        .flatten()
        .tolist()  # type: ignore[arg-type]
        for name in ("ddpm", "ddim", "dpmpp")
    }
    assert set(PINNED) == set(got)
    for name, values in PINNED.items():
        np.testing.assert_allclose(got[name], values, rtol=0, atol=1e-6, err_msg=name)


PINNED: dict[str, list[float]] = {
    "ddpm": [-0.026283277, 0.017960069, -0.049580055, -0.284276262],
    "ddim": [0.414078776, 0.32461704, -0.382622372, -0.516049989],
    "dpmpp": [0.462520045, 0.335070173, -0.376791644, -0.554988324],
}


def test_bad_arguments_raise(schedule: NoiseSchedule) -> None:
    model = GaussianOracle(schedule.alphas_cumprod)
    with pytest.raises(ValueError, match="one seed per sample"):
        sample(
            model, schedule, None, (2, 1, 2, 2), sampler="ddpm", steps=5, seeds=[1], device="cpu"
        )
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(
            model, schedule, None, (1, 1, 2, 2), sampler="euler", steps=5, seeds=[1], device="cpu"
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be in"):
        sample(
            model, schedule, None, (1, 1, 2, 2), sampler="dpmpp", steps=0, seeds=[1], device="cpu"
        )
    with pytest.raises(ValueError, match="unknown sampler"):
        count_network_evaluations("euler", 5)  # type: ignore[arg-type]
