"""Fault injection: ``diffst prepare``, ``train`` and ``predict`` killed (SIGKILL) at seeded
random points, then run again, give the outputs of an uninterrupted run, and no partial file
is ever visible.

Each case runs the command in a subprocess, waits until it has started writing (a marker
file appears), kills it after a seeded random delay, checks what is visible, reruns the same
command in this process and compares with an uninterrupted run made here. The default suite
kills each command once; ``make test-slow`` kills it at several more points.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anndata
import numpy as np
import pytest
import tifffile
import torch

from diffst.cli import main
from diffst.runs.checkpoint import LAST, load_checkpoint
from tests.prepare.synthetic import UM_PER_PX, synthetic_sample

PREPARE = ["--genes", "4", "--hr-um", "4", "--factor", "2", "--patch", "8", "--stride", "4",
           "--set", "views.tissue_px=16", "--set", "views.cell_grid=4", "--set", "views.tile_px=4",
           "--set", "split.block_um=32", "--set", "split.seed=1"]  # fmt: skip
TRAIN = ["--preset", "tiny", "--set", "train.val_every=0", "--set", "train.ckpt_every=3",
         "--set", "train.keep_last=1", "--max-steps", "30", "--no-progress"]  # fmt: skip
PREDICT = ["--sampler", "ddim", "--steps", "2", "--samples", "2", "--device", "cpu",
           "--no-progress"]  # fmt: skip
SEEDS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


def write_merfish_folder(root: Path) -> Path:
    """The synthetic section (labelled synthetic) in the Vizgen layout: transcripts CSV in µm,
    the µm → px transform and the DAPI and polyT mosaics."""
    sample = synthetic_sample(8000)
    assert sample.image is not None and sample.transcripts is not None
    (root / "images").mkdir(parents=True)
    chunks = list(sample.transcripts.iter_chunks())
    x, y = (np.concatenate([getattr(c, k) for c in chunks]) for k in ("x_um", "y_um"))
    genes = np.array(sample.genes)[np.concatenate([c.gene for c in chunks])]
    with open(root / "detected_transcripts.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["global_x", "global_y", "gene", "global_z"])
        out.writerows(zip(np.round(x, 4), np.round(y, 4), genes, [0] * len(x), strict=True))
    np.savetxt(root / "images" / "micron_to_mosaic_pixel_transform.csv",
               np.diag([1 / UM_PER_PX, 1 / UM_PER_PX, 1.0]))  # fmt: skip
    pixels = np.asarray(sample.image.pixels)
    for k, name in enumerate(sample.image.channels):
        tifffile.imwrite(root / "images" / f"mosaic_{name}_z0.tif", pixels[..., k])
    return root


def kill_when(
    args: list[str], started: Callable[[], bool], delay_s: float, timeout_s: float = 60.0
) -> int:
    """Run ``diffst <args>`` in a subprocess; SIGKILL it ``delay_s`` after ``started()`` holds
    (if it is still running). Returns its exit status (-9 when killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffst", *args], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay_s)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    return proc.returncode


def visible(folder: Path) -> list[str]:
    """Names under ``folder`` that are not hidden (what a user sees)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def same_store(a: Path, b: Path) -> None:
    files = [p.relative_to(a) for p in sorted(a.rglob("*.npy"))]
    assert files and files == [p.relative_to(b) for p in sorted(b.rglob("*.npy"))]
    for rel in files:
        np.testing.assert_array_equal(np.load(a / rel), np.load(b / rel), err_msg=str(rel))
    ma, mb = (json.loads((s / "manifest.json").read_text()) for s in (a, b))
    for m in (ma, mb):
        del m["created_utc"], m["command"]
    assert ma == mb


@pytest.fixture(scope="module")
def section(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_merfish_folder(tmp_path_factory.mktemp("faults") / "section")


@pytest.fixture(scope="module")
def reference(section: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs: the store, a trained run and a prediction."""
    root = tmp_path_factory.mktemp("reference")
    store, run, pred = root / "store", root / "run", root / "pred.h5ad"
    assert main(["prepare", "--input", str(section), "--out", str(store), *PREPARE]) == 0
    assert main(["train", "--store", str(store), "--out", str(run), *TRAIN]) == 0
    ckpt = run / "checkpoints" / LAST
    predict = ["predict", "--checkpoint", str(ckpt), "--input", str(section), *PREDICT]
    assert main([*predict, "--out", str(pred)]) == 0
    return {"store": store, "run": run, "pred": pred, "ckpt": ckpt}


@pytest.mark.parametrize("seed", SEEDS)
def test_prepare_killed_then_rerun(
    seed: int, section: Path, reference: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    out = tmp_path / "store"
    args = ["prepare", "--input", str(section), "--out", str(out), *PREPARE]
    status = kill_when(args, lambda: any(tmp_path.glob(".store.tmp-*")), rng.uniform(0, 0.15))
    if status == 0 or out.exists():  # finished before the kill: a complete store
        same_store(out, reference["store"])
    else:
        assert visible(tmp_path) == [] and hidden(tmp_path)  # only the hidden, partial store
    assert main([*args, "--overwrite"]) == 0
    same_store(out, reference["store"])
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_then_resumed(seed: int, reference: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    out = tmp_path / "run"
    args = ["train", "--store", str(reference["store"]), "--out", str(out), *TRAIN]
    kill_when(args, lambda: (out / "log.csv").is_file(), rng.uniform(0, 1.5))
    last = out / "checkpoints" / LAST
    if last.exists():
        assert load_checkpoint(last)["step"] >= 3  # complete, readable
    assert all(not name.endswith(".tmp") for name in visible(out))
    assert main([*args, "--resume"] if last.exists() else args) == 0
    a, b = load_checkpoint(reference["ckpt"]), load_checkpoint(last)
    assert a["step"] == b["step"] == 30
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["ema"]["weights"].items():
        assert torch.equal(value, b["ema"]["weights"][key]), key
    rows = [list(csv.DictReader(open(r / "log.csv", newline=""))) for r in (reference["run"], out)]
    assert [r["step"] for r in rows[1]] == [str(s) for s in range(1, 31)]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    assert hidden(out / "checkpoints") == []


@pytest.mark.parametrize("seed", SEEDS)
def test_predict_killed_then_rerun(
    seed: int, section: Path, reference: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    out = tmp_path / "pred.h5ad"
    args = ["predict", "--checkpoint", str(reference["ckpt"]), "--input", str(section),
            "--out", str(out), *PREDICT]  # fmt: skip
    status = kill_when(args, lambda: any(tmp_path.glob(".pred.h5ad.*")), rng.uniform(0, 0.05))
    if status != 0:
        assert visible(tmp_path) == [] and hidden(tmp_path)  # only the partial temporary
        assert main(args) == 0
    want, got = anndata.read_h5ad(reference["pred"]), anndata.read_h5ad(out)
    np.testing.assert_array_equal(want.X, got.X)
    for layer in want.layers:
        np.testing.assert_array_equal(want.layers[layer], got.layers[layer])
    assert hidden(tmp_path) == []
