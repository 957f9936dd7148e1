"""Two gloo processes under torchrun match one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from diffst.runs.checkpoint import LAST, load_checkpoint
from diffst.training.loop import train

from .conftest import tiny_config

STEPS = 2
OVERRIDES = ("train.val_every=0", f"train.max_steps={STEPS}", "train.batch_size=1")


def test_torchrun_two_processes_match_single_process(store: Path, tmp_path: Path) -> None:
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "diffst", "train", "--store", str(store),
           "--out", str(ddp_out), "--preset", "tiny", "--no-progress"]  # fmt: skip
    for item in OVERRIDES:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process, two micro-batches of 1 per step = the same global batch of 2
    single = train(store, tmp_path / "single", tiny_config(*OVERRIDES, "train.grad_accum=2"),
                   progress=False)  # fmt: skip
    a = load_checkpoint(ddp_out / "checkpoints" / LAST)
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / LAST)
    assert a["step"] == b["step"] == single.step == STEPS
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    changed = any(
        not torch.equal(a["model"][k], a["ema"]["weights"][k]) for k in a["model"]
    )  # training moved the weights away from their EMA
    assert changed
