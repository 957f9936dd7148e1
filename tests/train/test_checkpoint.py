"""Atomic checkpoint files, corrupted/foreign files, RNG round trips, store comparisons."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from diffst.io.sample import InputError
from diffst.runs.checkpoint import CHECKPOINT_FORMAT, LAST, load_checkpoint, read_store_meta
from diffst.training import checkpoint as ckpt
from diffst.training.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    store_differences,
    write_run_checkpoint,
)


def _state(step: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": {"w": torch.full((3,), float(step))},
        "ema": {"weights": {}, "num_updates": step},
        "step": step,
        "config": {},
        "store_meta": {"genes": ["a"]},
    }


def test_rotation_keeps_last_n_and_last_points_to_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        write_run_checkpoint(_state(step), tmp_path, keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [LAST, "step_0000003.pt", "step_0000004.pt"]
    assert load_checkpoint(tmp_path / LAST)["step"] == 4
    assert load_checkpoint(tmp_path)["step"] == 4  # a folder resolves to its last.pt


def test_crash_during_write_keeps_previous_last(tmp_path: Path, monkeypatch) -> None:
    write_run_checkpoint(_state(1), tmp_path, keep_last=3)

    def crashing_save(obj, fh) -> None:
        fh.write(b"PK\x03\x04 partial bytes of a zip archive")
        raise KeyboardInterrupt("simulated kill during the write")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        write_run_checkpoint(_state(2), tmp_path, keep_last=3)
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / LAST)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was removed
    assert not (tmp_path / "step_0000002.pt").exists()


def test_stale_temp_of_killed_writer_is_ignored_and_cleaned(tmp_path: Path) -> None:
    write_run_checkpoint(_state(1), tmp_path, keep_last=3)
    stale = tmp_path / ".step_0000002.pt.999.tmp"  # what kill -9 mid-write leaves behind
    stale.write_bytes(b"PK\x03\x04 truncated")
    assert load_checkpoint(tmp_path)["step"] == 1
    write_run_checkpoint(_state(2), tmp_path, keep_last=3)
    assert not stale.exists()
    assert load_checkpoint(tmp_path)["step"] == 2


def test_truncated_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    path = write_run_checkpoint(_state(1), tmp_path, keep_last=1)
    data = path.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"bad\.pt: checkpoint is corrupted or truncated"):
        load_checkpoint(bad)


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputError, match="field 'format': not a diffst checkpoint"):
        load_checkpoint(other)
    with pytest.raises(InputError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_rng_state_round_trip_through_a_file(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(4)  # noqa: NPY002
    random.seed(5)
    state = dict(_state(1), rng=capture_rng_state())
    ckpt.save_checkpoint(state, tmp_path / "x.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path / "x.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_store_differences_lists_genes_and_geometry() -> None:
    a = {"genes": ["A", "B", "C"], "geometry": {"hr_um": 4.25, "factor": 10}, "hr_size": 256}
    b = {"genes": ["A", "B", "D"], "geometry": {"hr_um": 8.0, "factor": 10}, "hr_size": 256}
    diffs = store_differences(a, b)
    assert diffs == [
        "genes: only in checkpoint ['C']; only in store ['D']",
        "geometry.hr_um: checkpoint 4.25 vs store 8.0",
    ]
    assert store_differences(a, dict(a)) == []
    assert store_differences(a, dict(a, genes=["C", "B", "A"])) == [
        "genes: same genes in a different order"
    ]


def test_read_store_meta(store: Path) -> None:
    meta = read_store_meta(store, "intensity", "train")
    assert meta["genes"] == ["synthA", "synthB", "synthC", "synthD"]
    assert (meta["hr_size"], meta["lr_size"], meta["image_channels"]) == (8, 4, 2)
    assert (meta["tissue_size"], meta["cell_grid"], meta["cell_tile_size"]) == (16, 4, 4)
    adj = meta["adjacency"]
    assert adj.shape == (4, 4)
    torch.testing.assert_close(adj.sum(1), torch.ones(4))
    assert len(meta["manifest_sha256"]) == 64
    assert meta["image"] == {"channels": ["DAPI", "PolyT"]}  # passed on for predict's checks


def test_read_store_meta_missing_split(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nosuch[/\\]hr\.npy: store array not found"):
        read_store_meta(store, "intensity", "nosuch")
    with pytest.raises(InputError, match=r"manifest\.json: store manifest not found"):
        read_store_meta(tmp_path, "intensity", "train")


_WRITER = """
import sys, torch
from diffst.training.checkpoint import write_run_checkpoint
from diffst.runs.checkpoint import CHECKPOINT_FORMAT
big = torch.randn(4_000_000)  # 16 MB per checkpoint: the kill lands mid-write most of the time
for step in range(1, 10_000):
    state = {"format": CHECKPOINT_FORMAT, "version": 1, "model": {"w": big + step},
             "ema": {"weights": {}, "num_updates": step}, "step": step, "config": {},
             "store_meta": {}}
    write_run_checkpoint(state, sys.argv[1], keep_last=2)
"""


def test_kill_9_during_writes_leaves_a_loadable_last(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("step_0000002.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(tmp_path / LAST)
    assert state["step"] >= 2
    step_file = load_checkpoint(tmp_path / f"step_{state['step']:07d}.pt")
    assert torch.equal(step_file["model"]["w"], state["model"]["w"])
