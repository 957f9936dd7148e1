"""training_losses: masking, oracle models, the hybrid objective and its stop-gradient."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from diffst.diffusion import DiffusionConfig, NoiseSchedule, training_losses
from diffst.diffusion.losses import masked_mean

from .conftest import Output


@dataclass
class OracleCondition:
    """Condition that lets a test model see the clean data (and carries a disentangle loss)."""

    x0: Tensor
    disentangle_loss: Tensor


class Oracle:
    """Returns the exact ε (or v) of x_t given the clean x0 of its condition."""

    def __init__(self, schedule: NoiseSchedule, variance: float | None, offset: float = 0.0):
        self.schedule = schedule
        self.variance = variance
        self.offset = offset

    def __call__(self, x_t: Tensor, t: Tensor, cond: OracleCondition) -> Output:
        eps = self.schedule.eps_from_x0(x_t, t, cond.x0)
        if self.schedule.prediction == "v":
            pred = self.schedule.v_target(cond.x0, eps, t)
        elif self.schedule.prediction == "x0":
            pred = cond.x0
        else:
            pred = eps
        var = None if self.variance is None else torch.full_like(x_t, self.variance)
        return Output(prediction=pred + self.offset, variance=var)


class Pointwise(nn.Module):
    """Per-gene affine ε and variance heads: each bin's output depends on that bin only."""

    def __init__(self, genes: int) -> None:
        super().__init__()
        self.mean_scale = nn.Parameter(torch.full((1, genes, 1, 1), 0.5))
        self.var_bias = nn.Parameter(torch.zeros((1, genes, 1, 1)))

    def forward(self, x_t: Tensor, t: Tensor, cond: object) -> Output:
        return Output(prediction=self.mean_scale * x_t, variance=torch.tanh(self.var_bias + x_t))


def _batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand((3, 2, 6, 6), generator=gen) * 2 - 1
    mask = (torch.rand((3, 1, 6, 6), generator=gen) > 0.4).float()
    return x0, mask


def test_masked_mean_ignores_nan_outside_mask() -> None:
    values = torch.tensor([[[[1.0, 3.0], [float("nan"), 1e9]]]]).repeat(1, 2, 1, 1)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_masked_bins_do_not_affect_loss_or_gradients(schedule: NoiseSchedule) -> None:
    cfg = DiffusionConfig()
    x0, mask = _batch()
    poisoned = x0.clone()
    outside = (mask == 0).expand_as(x0)
    poisoned[outside] = float("nan")
    poisoned[outside & (torch.arange(6) % 2 == 0)] = 1e6
    results = []
    for data in (x0, poisoned):
        model = Pointwise(genes=2)
        terms = training_losses(
            model, schedule, data, None, mask, cfg, torch.Generator().manual_seed(5)
        )
        terms.total.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((terms, grads))
    (clean, clean_grads), (bad, bad_grads) = results
    for name in ("total", "simple", "vb"):
        assert torch.isfinite(getattr(bad, name))
        assert getattr(bad, name).item() == getattr(clean, name).item()
    for g_clean, g_bad in zip(clean_grads, bad_grads, strict=True):
        assert torch.isfinite(g_bad).all()
        torch.testing.assert_close(g_bad, g_clean, rtol=0, atol=0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_perfect_oracle_has_near_zero_simple_loss(prediction: str) -> None:
    schedule = NoiseSchedule.from_config(DiffusionConfig(prediction=prediction))  # type: ignore[arg-type]
    x0, mask = _batch(1)
    x0 = x0.double()
    cond = OracleCondition(x0, torch.tensor(0.0))
    mse = DiffusionConfig(prediction=prediction, simple_loss="mse", learn_sigma=False)  # type: ignore[arg-type]
    terms = training_losses(Oracle(schedule, None), schedule, x0, cond, mask, mse)
    assert terms.simple.item() < 1e-20
    charb = DiffusionConfig(prediction=prediction, learn_sigma=False)  # type: ignore[arg-type]
    terms = training_losses(Oracle(schedule, None), schedule, x0, cond, mask, charb)
    # Charbonnier of a zero error is its ε (1e-3).
    assert terms.simple.item() == pytest.approx(1e-3, rel=1e-6)
    assert terms.vb.item() == 0.0


def test_charbonnier_value_is_hand_computed(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(2)
    cond = OracleCondition(x0.double(), torch.tensor(0.0))
    cfg = DiffusionConfig(learn_sigma=False)
    terms = training_losses(
        Oracle(schedule, None, offset=0.05), schedule, x0.double(), cond, mask, cfg
    )
    assert terms.simple.item() == pytest.approx(math.sqrt(0.05**2 + 1e-6), rel=1e-9)


def test_vb_is_zero_for_exact_mean_and_posterior_variance(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(3)
    x0 = x0.double()
    cond = OracleCondition(x0, torch.tensor(0.0))
    t = torch.tensor([1, 300, 999])
    exact = training_losses(
        Oracle(schedule, -1.0), schedule, x0, cond, mask, DiffusionConfig(), t=t
    )
    assert abs(exact.vb.item()) < 1e-10
    wide = training_losses(Oracle(schedule, 1.0), schedule, x0, cond, mask, DiffusionConfig(), t=t)
    assert wide.vb.item() > 1e-3  # variance β_t ≠ β̃_t costs bits
    # At t = 0 the term is the Gaussian decoder NLL of x0 under N(x0, β̃_1), in bits.
    t0 = training_losses(
        Oracle(schedule, -1.0),
        schedule,
        x0,
        cond,
        mask,
        DiffusionConfig(),
        t=torch.zeros(3, dtype=torch.long),
    )
    nll = 0.5 * (math.log(2 * math.pi) + math.log(schedule.posterior_variance[1]))
    assert t0.vb.item() == pytest.approx(nll / math.log(2), rel=1e-9)


def test_total_combines_terms_with_configured_weights(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(4)
    cond = OracleCondition(x0.double(), torch.tensor(2.5, dtype=torch.float64))
    cfg = DiffusionConfig(vb_weight=0.002, disentangle_weight=0.1)
    terms = training_losses(
        Oracle(schedule, 0.3, offset=0.1),
        schedule,
        x0.double(),
        cond,
        mask,
        cfg,
        torch.Generator().manual_seed(0),
    )
    assert terms.disentangle.item() == 2.5
    expected = terms.simple + 0.002 * 1000 * terms.vb + 0.1 * 2.5
    torch.testing.assert_close(terms.total, expected)
    assert terms.vb.item() > 0


def test_vb_term_trains_only_the_variance(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(5)
    model = Pointwise(genes=2)
    terms = training_losses(
        model, schedule, x0, None, mask, DiffusionConfig(), torch.Generator().manual_seed(1)
    )
    terms.vb.backward()
    assert model.mean_scale.grad is None or (model.mean_scale.grad == 0).all()
    assert model.var_bias.grad is not None and model.var_bias.grad.abs().sum() > 0


def test_generator_makes_losses_reproducible_and_t_uniform(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(6)
    model = Pointwise(genes=2)
    a = training_losses(
        model, schedule, x0, None, mask, DiffusionConfig(), torch.Generator().manual_seed(9)
    )
    b = training_losses(
        model, schedule, x0, None, mask, DiffusionConfig(), torch.Generator().manual_seed(9)
    )
    c = training_losses(
        model, schedule, x0, None, mask, DiffusionConfig(), torch.Generator().manual_seed(10)
    )
    assert a.total.item() == b.total.item() != c.total.item()
    seen = []

    def spy(x_t: Tensor, t: Tensor, cond: object) -> Output:
        seen.append(t)
        return model(x_t, t, cond)

    big = torch.zeros((2000, 1, 1, 1))
    training_losses(
        spy,
        schedule,
        big,
        None,
        torch.ones_like(big),
        DiffusionConfig(),
        torch.Generator().manual_seed(0),
    )
    t = seen[0]
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
    assert t.float().mean().item() == pytest.approx(499.5, abs=3 * 289 / math.sqrt(2000))


def test_configuration_mismatches_raise(schedule: NoiseSchedule) -> None:
    x0, mask = _batch(7)
    with pytest.raises(ValueError, match="learn_sigma=True"):
        training_losses(
            Oracle(schedule, None),
            schedule,
            x0,
            OracleCondition(x0, torch.tensor(0.0)),
            mask,
            DiffusionConfig(),
        )
    with pytest.raises(ValueError, match="learn_sigma=False"):
        training_losses(Pointwise(2), schedule, x0, None, mask, DiffusionConfig(learn_sigma=False))
    with pytest.raises(ValueError, match="mask must be"):
        training_losses(Pointwise(2), schedule, x0, None, mask[:, 0], DiffusionConfig())
    with pytest.raises(ValueError, match="1000-step schedule"):
        training_losses(Pointwise(2), schedule.respace(20), x0, None, mask, DiffusionConfig())


def test_t_max_share_trains_a_share_of_the_batch_at_the_last_step() -> None:
    """``diffusion.t_max_share``: that share of draws at t = T − 1 (the posterior-mean step),
    the rest uniform; 0 keeps the paper's uniform draw."""
    seen: list[Tensor] = []

    def spy(x_t: Tensor, t: Tensor, cond: object) -> Output:
        seen.append(t.clone())
        return Output(torch.zeros_like(x_t), None)

    x0 = torch.zeros(4000, 1, 1, 1)
    mask = torch.ones_like(x0)
    for share in (0.0, 0.3):
        seen.clear()
        cfg = DiffusionConfig(learn_sigma=False, t_max_share=share, disentangle_weight=0.0)
        schedule = NoiseSchedule.from_config(cfg)
        training_losses(spy, schedule, x0, None, mask, cfg, torch.Generator().manual_seed(0))
        at_last = (seen[0] == schedule.model_timesteps(torch.tensor([cfg.num_steps - 1]))).float()
        assert at_last.mean().item() == pytest.approx(share + (1 - share) / cfg.num_steps, abs=0.02)
    with pytest.raises(Exception, match="t_max_share"):
        DiffusionConfig(t_max_share=1.0)


@dataclass
class MeanCondition:
    """Condition carrying a regression μ of the data (as ``model.mean_head`` gives)."""

    mean: Tensor
    disentangle_loss: Tensor


def test_mean_target_diffuses_the_residual_over_mu_and_trains_mu_by_its_own_error() -> None:
    """``diffusion.target='mean'``: the diffused variable is x0 − μ (μ cut from the graph), and
    μ gets the masked squared error against x0 with weight ``mean_weight``."""
    x0, mask = _batch(7)
    cfg = DiffusionConfig(learn_sigma=False, target="mean", mean_weight=0.5, prediction="x0",
                          simple_loss="mse", disentangle_weight=0.0)  # fmt: skip
    schedule = NoiseSchedule.from_config(cfg)
    mean = (x0 + 0.3 * torch.randn_like(x0)).requires_grad_(True)
    cond = MeanCondition(mean, torch.zeros(()))
    seen: list[Tensor] = []

    def residual_oracle(x_t: Tensor, t: Tensor, c: object) -> Output:
        seen.append(x_t)
        return Output((x0 - mean).detach(), None)  # the exact residual, as x0-prediction

    terms = training_losses(residual_oracle, schedule, x0, cond, mask, cfg,
                            torch.Generator().manual_seed(0))  # fmt: skip
    assert terms.simple.item() == pytest.approx(0.0, abs=1e-10)  # the residual was the target
    expected = masked_mean((mean.detach() - x0) ** 2, mask)
    torch.testing.assert_close(terms.mean, expected)
    torch.testing.assert_close(terms.total, 0.5 * expected)
    terms.total.backward()
    assert mean.grad is not None
    in_mask = mask.expand_as(x0).sum()  # bins × genes averaged over
    torch.testing.assert_close(mean.grad, 0.5 * 2 * (mean.detach() - x0) * mask / in_mask)
    # without μ in the condition: no mean term, and the mean process refuses to run
    plain = training_losses(Pointwise(2), NoiseSchedule.from_config(DiffusionConfig()), x0, None,
                            mask, DiffusionConfig(), torch.Generator().manual_seed(0))  # fmt: skip
    assert plain.mean.item() == 0.0
    with pytest.raises(ValueError, match="mean_head"):
        training_losses(Pointwise(2), schedule, x0, None, mask, cfg)


def test_mean_target_needs_the_mean_head() -> None:
    from diffst.config import ConfigError
    from diffst.runs.config import resolve_run_config

    with pytest.raises(ConfigError, match="mean_head"):
        resolve_run_config("tiny", None, ["diffusion.target=mean"])
    run = resolve_run_config("tiny", None, ["diffusion.target=mean", "model.mean_head=true"])
    assert run.diffusion.target == "mean" and run.model.mean_head
