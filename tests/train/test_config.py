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
