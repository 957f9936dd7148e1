"""Presets, config files and overrides resolve to checked RunConfigs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffst.config import ConfigError, available_presets
from diffst.runs.config import resolve_run_config


def test_presets_exist_and_paper_values() -> None:
    assert {"paper", "small", "tiny"} <= set(available_presets())
    cfg = resolve_run_config("paper")
    m, d, t = cfg.model, cfg.diffusion, cfg.train
    assert (m.base_channels, m.channel_mult, m.num_res_blocks, m.attention_resolutions) == (
        128, (1, 1, 1), 1, ()
    )  # fmt: skip
    assert (d.num_steps, d.beta_schedule, d.prediction, d.learn_sigma) == (
        1000, "linear", "eps", True
    )  # fmt: skip
    assert (t.batch_size, t.lr, t.weight_decay, t.ema_decay) == (4, 1e-4, 1e-5, 0.9999)


def test_paper_corrective_is_the_paper_network_with_the_small_additions() -> None:
    paper, corr = resolve_run_config("paper"), resolve_run_config("paper_corrective")
    assert (corr.model.base_channels, corr.model.channel_mult, corr.train.batch_size) == (
        paper.model.base_channels, paper.model.channel_mult, paper.train.batch_size
    )  # fmt: skip
    assert corr.model.mean_head and corr.model.hr_image_channels > 0
    assert (corr.diffusion.target, corr.diffusion.prediction, corr.diffusion.simple_loss) == (
        "mean", "v", "mse"
    )  # fmt: skip


@pytest.mark.parametrize("preset", ["paper", "paper_corrective", "small", "tiny"])
def test_every_preset_trains_one_step(preset: str) -> None:
    """Each shipped preset builds, runs a loss and a backward pass (at toy shapes)."""
    import dataclasses

    import torch

    from diffst.diffusion import NoiseSchedule, training_losses
    from diffst.models import coexpression_adjacency
    from diffst.runs.checkpoint import build_model

    cfg = resolve_run_config(preset)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, base_channels=16, tissue_size=32, cell_grid=4, cell_tile_size=8,
        cond_channels=16, histology_channels=8, lr_hidden_channels=8,
    ))  # fmt: skip
    meta = {"genes": ["a", "b", "c"], "image_channels": 3, "lr_size": 4, "hr_size": 16,
            "adjacency": coexpression_adjacency(totals=torch.tensor([1.0, 2.0, 3.0]))}  # fmt: skip
    model = build_model(cfg, meta)
    g = torch.Generator().manual_seed(0)
    cond = model.encode_condition(
        torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 32, 32, generator=g),
        torch.rand(2, 16, 3, 8, 8, generator=g), torch.rand(2, 16, generator=g),
    )  # fmt: skip
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    terms = training_losses(model, schedule, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1,
                            cond, torch.ones(2, 1, 16, 16), cfg.diffusion, g)  # fmt: skip
    terms.total.backward()
    assert torch.isfinite(terms.total)


def test_file_then_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("train:\n  lr: 0.01\n  max_steps: 9\n", encoding="utf-8")
    cfg = resolve_run_config("tiny", extra, ["train.max_steps=11", "model.base_channels=16"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.model.base_channels) == (0.01, 11, 16)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", r"train\.batch_size: must be ≥ 1"),
        ("train.amp=fp16", r"train\.amp: 'fp16' is not one of"),
        ("train.nope=1", r"unknown key\(s\) \['nope'\]"),
        ("trian.lr=1", r"unknown config section\(s\) \['trian'\]"),
        ("train.ema_decay=1.0", r"train\.ema_decay: must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_run_config("tiny", None, [override])


def test_residual_process_needs_the_lr_input() -> None:
    with pytest.raises(ConfigError, match="residual"):
        resolve_run_config("small", overrides=["model.use_lr=false", "diffusion.target=residual"])
    cfg = resolve_run_config("small", overrides=["model.use_lr=false", "diffusion.target=hr"])
    assert cfg.diffusion.target == "hr" and not cfg.model.use_lr
