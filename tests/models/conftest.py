"""Tiny configurations and inputs shared by the model tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from diffst.models import DiffSTModel, ModelConfig, coexpression_adjacency

N_GENES = 4
IMAGE_CHANNELS = 3
HR = 8
LR = 3

TINY = ModelConfig(
    base_channels=8,
    channel_mult=(1, 2),
    num_heads=2,
    norm_groups=4,
    cond_channels=8,
    cond_token_grid=2,
    lr_hidden_channels=8,
    tissue_size=16,
    cell_grid=4,
    cell_tile_size=4,
    histology_channels=8,
)

ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_graph": {"use_graph": False},
    "no_cross_attention": {"use_cross_attention": False},
    "no_disentangle": {"use_disentangle": False},
    "no_modulation": {"use_modulation": False},
    "no_disentangle_no_modulation": {"use_disentangle": False, "use_modulation": False},
    "no_histology": {"use_histology": False},
    "no_lr": {"use_lr": False},
}


def tiny_config(**changes: Any) -> ModelConfig:
    """The tiny test configuration with some fields changed."""
    return replace(TINY, **changes)


def tiny_model(cfg: ModelConfig | None = None, *, hr: int = HR, lr: int = LR) -> DiffSTModel:
    """A tiny model with the intensity adjacency of totals 1, 2, …, G."""
    adjacency = coexpression_adjacency(totals=torch.arange(1.0, N_GENES + 1))
    return DiffSTModel(cfg or TINY, N_GENES, IMAGE_CHANNELS, lr, hr, adjacency)


def tiny_inputs(
    batch: int = 2, *, lr: int = LR, cfg: ModelConfig = TINY, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random conditioning inputs matching ``cfg`` (lr, tissue, cells, cell_score)."""
    g = torch.Generator().manual_seed(seed)
    n, t, s = cfg.cell_grid, cfg.cell_tile_size, cfg.tissue_size
    return {
        "lr": torch.randn(batch, N_GENES, lr, lr, generator=g),
        "tissue": torch.rand(batch, IMAGE_CHANNELS, s, s, generator=g),
        "cells": torch.rand(batch, n * n, IMAGE_CHANNELS, t, t, generator=g),
        "cell_score": torch.rand(batch, n * n, generator=g),
    }


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
