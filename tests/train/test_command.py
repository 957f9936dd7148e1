"""``diffst train`` CLI: dry-run prints the resolved config; bad overrides exit with status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffst.cli import main
from diffst.runs.checkpoint import LAST, load_checkpoint


def test_dry_run_prints_resolved_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["train", "--store", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "tiny",
            "--set", "train.lr=0.5", "--max-steps", "7", "--dry-run"]  # fmt: skip
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.5 and printed["train"]["max_steps"] == 7
    assert printed["model"]["base_channels"] == 8
    assert set(printed) == {"model", "diffusion", "train", "data"}
    assert not (tmp_path / "run").exists()


def test_bad_override_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["train", "--store", str(tmp_path), "--out", str(tmp_path), "--preset", "tiny",
            "--set", "train.batch_size=-1", "--dry-run"]  # fmt: skip
    assert main(args) == 2
    assert "train.batch_size: must be ≥ 1" in capsys.readouterr().err


def test_train_and_resume_from_cli(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", "--store", str(store), "--out", str(out), "--preset", "tiny", "--no-progress",
            "--set", "train.val_every=0"]  # fmt: skip
    assert main([*base, "--max-steps", "2"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert main([*base, "--max-steps", "3", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoints" / LAST)["step"] == 3
