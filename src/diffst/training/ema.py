"""Exponential moving average of model weights, with warm-up.

The effective decay at update ``n`` (1-based) is ``min(decay, (1 + n) / (10 + n))``, so early
averages are not dominated by the random initialisation (paper decay: 0.9999).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy of a module whose floating-point weights follow an exponential average.

    Parameters
    ----------
    model
        The trained module (unwrapped, not the DDP wrapper).
    decay
        Target decay (paper: 0.9999).
    warmup
        Use the warm-up formula above; without it the decay is constant.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """Decay used by the next :meth:`update`."""
        n = self.num_updates + 1
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema ← d·ema + (1 − d)·model`` for float parameters and buffers; others are copied."""
        d = self.current_decay()
        src = model.state_dict()
        for name, ema_t in self.module.state_dict().items():
            new = src[name].detach()
            if ema_t.dtype.is_floating_point:
                ema_t.mul_(d).add_(new.to(ema_t.dtype), alpha=1.0 - d)
            else:
                ema_t.copy_(new)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Weights and update count, for checkpoints."""
        return {"weights": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.module.load_state_dict(state["weights"])
        self.num_updates = int(state["num_updates"])
