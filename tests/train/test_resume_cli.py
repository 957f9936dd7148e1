"""``diffst train --resume`` continues the run's own configuration; run folders are never
overwritten silently (``--overwrite``); a different store is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffst.cli import main
from diffst.runs.checkpoint import LAST, load_checkpoint

from .conftest import write_synthetic_store

#: the original run: tiny preset, 4 steps, checkpoints at 2 and 4, no validation
ORIGINAL = ["--preset", "tiny", "--set", "train.val_every=0", "--max-steps", "4"]


def _train(store: Path, out: Path, *flags: str) -> int:
    return main(["train", "--store", str(store), "--out", str(out), "--no-progress", *flags])


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (what a refused command must leave alone)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    assert _train(store, out, *ORIGINAL) == 0
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_without_flags_continues_the_runs_configuration(
    run: Path, finished: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's resume line: no preset or overrides, from the step-2 checkpoint."""
    capsys.readouterr()
    assert _train(store, run, "--resume", str(run / "checkpoints" / "step_0000002.pt")) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "at step 2 of 4" in out and "trained to step 4" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved == yaml.safe_load((finished / "config.yaml").read_text())  # tiny, not small
    a, b = _weights(finished / "checkpoints" / LAST), _weights(run / "checkpoints" / LAST)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_finished_run_writes_nothing(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(run)
    capsys.readouterr()
    assert _train(store, run, "--resume") == 0
    assert "already trained to step 4 (train.max_steps); nothing to do" in capsys.readouterr().out
    assert _digest(run) == before


def test_resume_may_raise_max_steps(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _train(store, run, "--resume", "--max-steps", "6") == 0
    printed = capsys.readouterr().out
    assert "with train.max_steps: 4 → 6" in printed
    for label, path in (
        ("log", "log.csv"),
        ("tensorboard", "tensorboard"),
        ("config", "config.yaml"),
    ):
        assert f"  {label + ':':<13}{run / path}" in printed
    assert load_checkpoint(run / "checkpoints" / LAST)["step"] == 6
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 6 and saved["model"]["base_channels"] == 8
    with open(run / "log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "train.lr=0.5"], "changed configuration: train.lr: 0.001 → 0.5 (a resumed"),
        (["--preset", "small"], "model.base_channels: 8 → 32"),
        (["--max-steps", "1"], "train.max_steps=1 is below the checkpoint's step 4"),
        (["--overwrite"], "--resume continues a run and --overwrite replaces it"),
    ],
)
def test_resume_refuses_unsafe_changes(
    flags: list[str], message: str, run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(run)
    assert _train(store, run, "--resume", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _digest(run) == before


def test_resume_on_another_store_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same genes, geometry and sizes, but not the store the run was trained on."""
    other = write_synthetic_store(tmp_path / "other", seed=1)
    before = _digest(run)
    assert _train(other, run, "--resume", "--max-steps", "6") == 2
    err = capsys.readouterr().err
    assert "field manifest.json differs from the store the run was trained on" in err
    assert _digest(run) == before


def test_resume_dry_run_prints_the_runs_configuration(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(store, run, "--resume", "--max-steps", "9", "--dry-run") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["base_channels"] == 8 and printed["train"]["max_steps"] == 9


def test_new_run_into_a_run_folder_needs_overwrite(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(run)
    assert _train(store, run, *ORIGINAL) == 2
    err = capsys.readouterr().err
    assert "run folder exists (checkpoints up to step_0000004); pass --resume" in err
    assert _digest(run) == before
    assert _train(store, run, *ORIGINAL[:-1], "2", "--overwrite") == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [LAST, "step_0000002.pt"]  # the old run's step 4 is gone
    with open(run / "log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2]


def test_new_run_refuses_a_folder_of_other_files(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert _train(store, tmp_path, *ORIGINAL, *extra) == 2
        assert "is not empty and not a diffst run folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_manifest_digest_is_recorded(finished: Path, store: Path) -> None:
    meta = load_checkpoint(finished / "checkpoints" / LAST)["store_meta"]
    raw = (store / "manifest.json").read_bytes()
    assert meta["manifest_sha256"] == hashlib.sha256(raw).hexdigest()
    assert meta["store_path"] == str(store.resolve())
    assert json.loads(raw)["genes"] == meta["genes"]


def test_run_files_are_readable_by_the_group(store: Path, tmp_path: Path) -> None:
    """config.yaml and log.csv follow the umask like the checkpoints (not 0600)."""
    old = os.umask(0o027)
    try:
        assert _train(store, tmp_path / "run", *ORIGINAL[:-1], "1") == 0
    finally:
        os.umask(old)
    for name in ("config.yaml", "log.csv", "checkpoints/last.pt"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o640, name


def test_stale_temporaries_of_a_killed_run_are_removed(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a finished process: its pid marks the temporary as stale
    ckpt_tmp = run / "checkpoints" / f".step_0000006.pt.{child.pid}.tmp"
    stale = [run / ".config.yaml.k3j9x2.tmp", ckpt_tmp]
    for path in stale:
        path.write_bytes(b"partial")
    assert _train(store, run, "--resume", "--max-steps", "5") == 0
    assert not any(p.exists() for p in stale)
    assert not list(run.rglob(".*"))


def test_a_run_stopped_before_its_first_checkpoint_starts_again(
    run: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to resume: a new run may replace its config and log without --overwrite."""
    shutil.rmtree(run / "checkpoints")
    assert _train(store, run, "--resume") == 2
    assert "the run folder has no checkpoint" in capsys.readouterr().err
    assert _train(store, run, *ORIGINAL[:-1], "2") == 0
    with open(run / "log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2]
