"""EMA warm-up formula and averaging, checked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffst.training.ema import EMA


def test_warmup_decay_and_average() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9999, warmup=True)
    assert ema.current_decay() == pytest.approx(2 / 11)
    with torch.no_grad():
        model.weight.fill_(11.0)
    ema.update(model)  # 2/11 · 0 + 9/11 · 11 = 9
    assert ema.module.weight.item() == pytest.approx(9.0)
    assert ema.current_decay() == pytest.approx(3 / 12)
    ema.update(model)  # 0.25 · 9 + 0.75 · 11 = 10.5
    assert ema.module.weight.item() == pytest.approx(10.5)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.9999


def test_constant_decay_and_state_round_trip() -> None:
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.update(model)
    other = EMA(nn.Linear(2, 1), decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    for a, b, m in zip(other.module.parameters(), ema.module.parameters(),
                       model.parameters(), strict=True):  # fmt: skip
        assert torch.equal(a, b)
        torch.testing.assert_close(a, m - 1.0)  # halfway between the copy and model (+2)
    assert not any(p.requires_grad for p in ema.module.parameters())
