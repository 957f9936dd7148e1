"""bf16 mixed precision where the hardware has it, on GPUs and CPUs alike.

bf16 autocast keeps fp32 master weights and runs convolutions and matrix products in bf16. It is
fast only where bf16 arithmetic is native: NVIDIA GPUs from Ampere on, and CPUs with AVX512-BF16
or AMX (on the 2-core AMD EPYC development machine a paper-shaped training step takes about half
the fp32 time, BENCHMARKS.md). Elsewhere bf16 is emulated and slower than fp32, so callers fall
back to fp32 and say so.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = ["autocast", "native_bf16"]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively (CUDA with bf16 support; a CPU with
    AVX512-BF16 or AMX tiles)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def autocast(device: torch.device | str, enabled: bool) -> AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``enabled`` (callers check :func:`native_bf16` first)."""
    device = torch.device(device)
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
