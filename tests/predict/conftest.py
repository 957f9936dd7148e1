"""A checkpoint built with the train engine's own model builder and save API (untrained EMA
weights), with the store metadata a Visium-lattice store of the given genes would record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffst.config import to_dict
from diffst.runs.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, build_model
from diffst.runs.config import resolve_run_config
from diffst.training.checkpoint import save_checkpoint
from diffst.training.ema import EMA

HR_UM = 25.0  # HR bin side, µm
FACTOR = 4  # 4 bins of 25 µm = one 100 µm LR cell (the Visium pitch)
PATCH = 16  # HR bins per tile side
VIEWS = {
    "tissue_px": 16,
    "cell_grid": 4,
    "tile_px": 8,
    "channels": [],
    "intensity_percentiles": [0.5, 99.5],
}


def store_meta(
    genes: list[str], lr: str = "visium", channels: int = 3, hr_um: float = HR_UM
) -> dict:
    """Store metadata in the layout :func:`diffst.runs.checkpoint.read_store_meta` returns."""
    from diffst.models.adjacency import coexpression_adjacency

    g = len(genes)
    totals = np.linspace(10.0, 1000.0, g)
    lr_bins = np.pi * 27.5**2 / hr_um**2 if lr == "visium" else float(FACTOR**2)
    return {
        "genes": list(genes),
        "geometry": {
            "origin_um": [0.0, 0.0],
            "hr_um": hr_um,
            "factor": FACTOR,
            "shape_hr": [64, 64],
            "lr_mode": lr,
            "lr_bins": lr_bins,
            "spot_diameter_um": 55.0,
            "spot_pitch_um": 100.0,
        },
        "views": dict(VIEWS),
        "normalisation": {
            "kind": "log1p_gene",
            "lr_bins": lr_bins,
            "gene_scale": [float(np.log1p(8.0))] * g,
        },
        "adjacency": coexpression_adjacency(totals=totals, kind="intensity"),
        "adjacency_kind": "intensity",
        "image_channels": channels,
        "hr_size": PATCH,
        "lr_size": -(-PATCH // FACTOR),
        "tissue_size": VIEWS["tissue_px"],
        "cell_grid": VIEWS["cell_grid"],
        "cell_tile_size": VIEWS["tile_px"],
        "manifest_sha256": "0" * 64,
    }


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_checkpoint(genes, lr="visium", channels=3, hr_um=25) -> Path`` (tiny, saved);
    ``overrides`` are ``section.key=value`` changes of the tiny preset."""

    def make(
        genes: list[str],
        lr: str = "visium",
        channels: int = 3,
        hr_um: float = HR_UM,
        image: dict | None = None,
        overrides: tuple[str, ...] = (),
    ) -> Path:
        torch.manual_seed(0)
        config = resolve_run_config("tiny", None, list(overrides))
        meta = store_meta(genes, lr, channels, hr_um)
        if image is not None:  # the manifest's "image" entry (channels, µm/px of training)
            meta["image"] = image
        model = build_model(config, meta)
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "ema": EMA(model, decay=0.9).state_dict(),
            "step": 0,
            "config": to_dict(config),
            "store_meta": meta,
        }
        folder = tmp_path_factory.mktemp("ckpt")
        return save_checkpoint(state, folder / "last.pt")

    return make
