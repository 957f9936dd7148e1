"""Deterministic sharding of micro-batches, seeds and the one-process fallback."""

from __future__ import annotations

import pytest

from diffst.distributed import (
    ShardedBatchSampler,
    init_distributed,
    micro_batch_seed,
)


def _batches(world: int, rank: int, accum: int, start: int = 0, epoch: int = 0) -> list:
    return list(ShardedBatchSampler(23, 2, world, rank, accum, seed=7, epoch=epoch,
                                    start_step=start))  # fmt: skip


def test_ranks_see_the_single_process_micro_batches() -> None:
    single = _batches(world=1, rank=0, accum=2)  # 23 // 4 = 5 steps × 2 micro-batches
    assert len(single) == 10
    r0, r1 = _batches(2, 0, 1), _batches(2, 1, 1)
    assert r0 == single[0::2] and r1 == single[1::2]
    flat = [i for b in single for i in b]
    assert len(flat) == len(set(flat)) == 20  # no patch twice; the tail of 3 is dropped


def test_order_depends_on_seed_and_epoch_only() -> None:
    assert _batches(1, 0, 1, epoch=0) == _batches(1, 0, 1, epoch=0)
    assert _batches(1, 0, 1, epoch=0) != _batches(1, 0, 1, epoch=1)


def test_start_step_resumes_mid_epoch() -> None:
    full = _batches(1, 0, 2)
    assert _batches(1, 0, 2, start=3) == full[6:]
    assert len(ShardedBatchSampler(23, 2, 1, 0, 2, 7, 0, start_step=3)) == 4


def test_micro_batch_seeds_are_distinct_and_stable() -> None:
    seeds = {micro_batch_seed(0, s, m) for s in range(20) for m in range(4)}
    assert len(seeds) == 80
    assert micro_batch_seed(0, 5, 1) == micro_batch_seed(0, 5, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_single_process_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = init_distributed("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)
    assert env.device.type == "cpu"
