"""A tiny synthetic patch store (labelled synthetic) and the tiny run configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffst.runs.config import RunConfig, resolve_run_config

GENES = ["synthA", "synthB", "synthC", "synthD"]
PATCH = 8  # P, HR bins
FACTOR = 2  # HR bins per LR cell side
CHANNELS = 2  # image channels (DAPI-like + polyT-like)
TISSUE_PX = 16  # S
CELL_GRID = 4  # n
TILE_PX = 4  # t


def _split_arrays(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Patches whose expression follows a smooth field that the image also shows."""
    g, p, lr_side = len(GENES), PATCH, PATCH // FACTOR
    yy, xx = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    field = 0.5 + 0.5 * np.sin(xx[None] / 2.0 + phase) * np.cos(yy[None] / 3.0)  # [n, P, P]
    rates = np.stack([(k + 1) * 3.0 * (field if k % 2 == 0 else 1 - field) for k in range(g)], 1)
    hr = rng.poisson(rates).astype(np.int32)  # [n, G, P, P]
    lr = hr.reshape(n, g, lr_side, FACTOR, lr_side, FACTOR).sum((3, 5)).astype(np.float32)
    img = np.kron(field, np.ones((TISSUE_PX // p, TISSUE_PX // p)))  # [n, S, S]
    tissue = np.stack([img, 1 - img], 1)
    tissue = (255 * tissue + rng.uniform(0, 10, tissue.shape)).clip(0, 255).astype(np.uint8)
    cells = rng.integers(0, 256, (n, CELL_GRID**2, CHANNELS, TILE_PX, TILE_PX), dtype=np.uint8)
    mask = np.ones((n, p, p), np.uint8)
    mask[:, :, -1] = 0  # one column outside tissue
    return {
        "hr.npy": hr,
        "lr.npy": lr,
        "mask.npy": mask,
        "lr_mask.npy": np.ones((n, lr_side, lr_side), np.uint8),
        "tissue.npy": tissue,
        "cells.npy": cells,
        "cell_score.npy": rng.uniform(0, 8, (n, CELL_GRID**2)).astype(np.float32),
        "origin_um.npy": np.stack([np.arange(n) * 40.0, np.zeros(n)], 1),
    }


def write_synthetic_store(
    root: Path, *, n_train: int = 8, n_val: int = 2, n_test: int = 2, seed: int = 0
) -> Path:
    """Write a store in the ``docs/store_format.md`` layout with synthetic patches."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": n_train, "val": n_val, "test": n_test}
    arrays = {name: _split_arrays(rng, n) for name, n in splits.items()}
    for name, files in arrays.items():
        (root / name).mkdir(exist_ok=True)
        for fname, arr in files.items():
            np.save(root / name / fname, arr)
    train_hr = arrays["train"]["hr.npy"].transpose(1, 0, 2, 3).reshape(len(GENES), -1)
    scale = np.full(len(GENES), np.log1p(1.0))
    if n_train:
        scale = np.maximum(np.percentile(np.log1p(train_hr), 99.9, axis=1), scale)
    manifest = {
        "synthetic": True,
        "genes": GENES,
        "geometry": {
            "origin_um": [0.0, 0.0],
            "hr_um": 5.0,
            "factor": FACTOR,
            "shape_hr": [PATCH, PATCH * 12],
            "patch": PATCH,
            "stride": PATCH,
            "lr_size": PATCH // FACTOR,
            "lr_mode": "grid",
            "lr_bins": float(FACTOR**2),
        },
        "image": {"channels": ["DAPI", "PolyT"]},
        "views": {"tissue_px": TISSUE_PX, "cell_grid": CELL_GRID, "tile_px": TILE_PX},
        "splits": {name: {"n_patches": n} for name, n in splits.items()},
        "normalisation": {
            "kind": "log1p_gene",
            "lr_bins": float(FACTOR**2),
            "gene_scale": [float(v) for v in scale],
        },
        "coexpr": {
            "s": train_hr.sum(1).astype(float).tolist(),
            "pearson": np.corrcoef(train_hr).tolist() if n_train else np.eye(len(GENES)).tolist(),
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic store shared by the training tests (read-only)."""
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "store")


def tiny_config(*overrides: str) -> RunConfig:
    """The ``tiny`` preset with ``section.key=value`` overrides."""
    return resolve_run_config("tiny", None, list(overrides))
