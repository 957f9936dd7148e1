"""Slow end-to-end runs: prepare → train → predict on real Visium; torchrun tile sharding."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest

from diffst.datasets import visium_mini

pytestmark = pytest.mark.slow


def test_model_trained_with_visium_lattice_predicts_real_visium(tmp_path: Path) -> None:
    """A tiny model trained on a synthetic section (genes named as the Visium fixture's Ensembl
    ids, Visium-lattice pseudo-spots) predicts the Space Ranger fixture end to end."""
    from diffst.inference.api import predict
    from diffst.inference.config import PredictConfig
    from diffst.preparation.api import prepare
    from diffst.runs.config import resolve_run_config
    from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig
    from diffst.synthetic import simulate_tissue
    from diffst.training.loop import train

    visium = visium_mini()
    assert visium.spots is not None
    syn = simulate_tissue(
        width_um=1600.0, height_um=1600.0, n_genes=100, um_per_px=4.0, cell_diameter_um=30.0
    )
    tx = syn.transcripts
    assert tx is not None
    names = tuple(visium.spots.gene_ids) + tuple(tx.genes[100:])
    syn = dataclasses.replace(syn, transcripts=dataclasses.replace(tx, genes=names))
    cfg = PrepareConfig(
        genes=100, hr_um=25.0, factor=4, lr="visium", patch=16, stride=8,
        views=ViewConfig(tissue_px=16, cell_grid=4, tile_px=8), split=SplitConfig(block_um=400.0),
    )  # fmt: skip
    prepare(syn, tmp_path / "store", cfg)
    result = train(tmp_path / "store", tmp_path / "run", resolve_run_config("tiny"), progress=False)
    adata = predict(
        result.checkpoint, visium, tmp_path / "pred.h5ad",
        PredictConfig(steps=2, n_samples=2, device="cpu", batch_size=32),
        figures_dir=tmp_path / "fig",
    )  # fmt: skip
    assert adata is not None
    back = anndata.read_h5ad(tmp_path / "pred.h5ad")
    assert back.n_vars == 100 and back.uns["diffst"]["lr_layout"] == "spots"
    assert back.uns["diffst"]["spot_consistency"]["n_spots"] == 100
    assert len(list((tmp_path / "fig").glob("*.png"))) == 4


def test_torchrun_shards_tiles_and_matches_one_process(tmp_path: Path) -> None:
    """Two CPU ranks (gloo) split the tiles; rank 0 writes the same prediction as one process."""
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun not installed next to the interpreter")

    ckpt = _checkpoint(tmp_path)
    common = ["predict", "--checkpoint", str(ckpt), "--input", "visium_mini", "--steps", "1",
              "--samples", "2", "--device", "cpu", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "diffst", *common, "--out",
                    str(tmp_path / "two.h5ad")], check=True, env=env)  # fmt: skip
    subprocess.run([sys.executable, "-m", "diffst", *common, "--out", str(tmp_path / "one.h5ad")],
                   check=True, env=env)  # fmt: skip
    one, two = (anndata.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("one", "two"))
    np.testing.assert_allclose(two.X, one.X, rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(two.layers["std"], one.layers["std"], rtol=5e-3, atol=1e-3)


def _checkpoint(tmp_path: Path) -> Path:
    import torch

    from diffst.config import to_dict
    from diffst.runs.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, build_model
    from diffst.runs.config import resolve_run_config
    from diffst.training.checkpoint import save_checkpoint
    from diffst.training.ema import EMA

    from .conftest import store_meta

    visium = visium_mini()
    assert visium.spots is not None
    torch.manual_seed(0)
    config = resolve_run_config("tiny")
    meta = store_meta(list(visium.spots.gene_ids))
    model = build_model(config, meta)
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model.state_dict(),
        "ema": EMA(model).state_dict(), "step": 0, "config": to_dict(config), "store_meta": meta,
    }  # fmt: skip
    return save_checkpoint(state, tmp_path / "ckpt" / "last.pt")
