"""tune_allocator: the thresholds are raised once, the user's environment wins, and large
tensors stop costing a page fault per 4 KiB page (counted, not timed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import diffst.allocator as allocator

PROBE = """
import os, resource, sys
import torch
import diffst.allocator as a
torch.set_num_threads(1)
applied = a.tune_allocator() if sys.argv[1] == "tuned" else False
def step():
    x = torch.ones(64 << 18)   # 64 MiB, above glibc's largest dynamic mmap threshold
    return float(x.sum())
for _ in range(20):  # the heap settles within a few steps
    step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_state", {})
    for name in (*allocator._USER_VARIABLES, "DIFFST_MALLOC_TUNING"):
        monkeypatch.delenv(name, raising=False)


def _probe(mode: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k not in allocator._USER_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_tensors_stop_faulting_in_fresh_pages() -> None:
    applied, tuned = _probe("tuned")
    if not applied:
        pytest.skip("this libc has no mallopt (not glibc)")
    _, default = _probe("default")
    block = (64 << 20) // 4096  # pages of one 64 MiB tensor
    assert default >= 8 * block  # each of the 10 blocks was mapped and faulted in again
    assert tuned <= block  # served from the heap once it has grown


def test_applied_once_and_remembered(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_mallopt", lambda: lambda p, v: calls.append((p, v)) or 1)
    assert allocator.tune_allocator() is True
    assert allocator.tune_allocator() is True
    assert calls == [(-3, 1 << 30), (-1, 1 << 30)]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DIFFST_MALLOC_TUNING", "0"), ("MALLOC_MMAP_THRESHOLD_", "65536"), ("GLIBC_TUNABLES", "x")],
)
def test_the_environment_wins(
    fresh: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(allocator, "_mallopt", lambda: pytest.fail("mallopt must not be called"))
    assert allocator.tune_allocator() is False


def test_no_op_off_glibc(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_allocator() is False
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_mallopt", lambda: None)
    assert allocator.tune_allocator() is False


def test_refused_thresholds_are_reported(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_mallopt", lambda: lambda p, v: 0)
    assert allocator.tune_allocator() is False
