"""Distributed training through ``torchrun`` only, with a one-process fallback.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them training runs in a
single process and every helper here is a no-op. Rank 0 alone prints and writes files.

Data order is a pure function of ``(seed, epoch)``: the patches of one epoch are permuted by a
generator seeded with both, cut into global batches, and each global batch is cut into
``world_size × grad_accum`` micro-batches; rank ``r`` takes micro-batches
``r·grad_accum … (r+1)·grad_accum − 1``. One process with ``grad_accum = k`` therefore sees
exactly the micro-batches that ``k`` processes see, and a resumed run continues from the
position ``(epoch, step within epoch)``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "ShardedBatchSampler",
    "all_reduce_mean",
    "barrier",
    "init_distributed",
    "micro_batch_seed",
    "rank0_print",
    "seed_everything",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int  # global rank, 0 … world_size − 1
    world_size: int  # number of processes
    local_rank: int  # rank on this node (selects the CUDA device)
    device: torch.device  # device this process computes on

    @property
    def is_main(self) -> bool:
        """True on the process that prints and writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use (``world_size > 1``)."""
        return self.world_size > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            from diffst.config import ConfigError

            raise ConfigError("train.device: 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistEnv:
    """Read the ``torchrun`` environment and join the process group when there is one.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    DistEnv
        Rank, world size, local rank and the torch device. Backend: NCCL on CUDA, gloo on CPU.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank0_print(env: DistEnv, *args: object) -> None:
    """``print`` on rank 0 only."""
    if env.is_main:
        print(*args, flush=True)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (returns a new tensor; identity in a single process)."""
    out = values.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA) with ``seed + rank``."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002
    torch.manual_seed(s)


def micro_batch_seed(seed: int, step: int, micro_index: int) -> int:
    """Seed of the noise generator for one micro-batch of one optimiser step.

    ``micro_index`` is the index of the micro-batch within the global batch, so the diffusion
    noise of a patch does not depend on how the global batch is spread over processes.
    """
    return _derived_seed(seed, _NOISE_STREAM, step, micro_index)


_NOISE_STREAM = 0  # SeedSequence stream id of the diffusion noise
_ORDER_STREAM = 1  # SeedSequence stream id of the data order


def _derived_seed(seed: int, stream: int, a: int, b: int = 0) -> int:
    """Independent 63-bit seed from ``(seed, stream, a, b)`` (all non-negative)."""
    words = [int(seed) % 2**32, stream, int(a), int(b)]
    lo, hi = np.random.SeedSequence(words).generate_state(2)
    return (int(hi) << 31 | int(lo) >> 1) & (2**63 - 1)


class ShardedBatchSampler:
    """Deterministic micro-batches of patch indices for one rank, from ``(seed, epoch)``.

    Parameters
    ----------
    n_items
        Number of patches in the split.
    micro_batch
        Patches per micro-batch (``train.batch_size``).
    world_size, rank
        Process layout.
    grad_accum
        Micro-batches per rank per optimiser step.
    seed, epoch
        Permutation seed; the order of epoch ``e`` is ``randperm(n, seed=(seed, e))``.
    start_step
        Optimiser steps of this epoch already done (resume position).
    """

    def __init__(
        self,
        n_items: int,
        micro_batch: int,
        world_size: int,
        rank: int,
        grad_accum: int,
        seed: int,
        epoch: int,
        start_step: int = 0,
    ) -> None:
        self.n_items = n_items
        self.micro_batch = micro_batch
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.seed = seed
        self.epoch = epoch
        self.start_step = start_step

    @property
    def global_batch(self) -> int:
        """Patches per optimiser step over all ranks."""
        return self.micro_batch * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch (the tail that does not fill a global batch is dropped)."""
        return self.n_items // self.global_batch

    def permutation(self) -> torch.Tensor:
        """``[n_items]`` int64 patch order of this epoch."""
        gen = torch.Generator().manual_seed(_derived_seed(self.seed, _ORDER_STREAM, self.epoch))
        return torch.randperm(self.n_items, generator=gen)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.permutation()
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            for a in range(self.grad_accum):
                m = self.rank * self.grad_accum + a
                yield batch[m * self.micro_batch : (m + 1) * self.micro_batch].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum
