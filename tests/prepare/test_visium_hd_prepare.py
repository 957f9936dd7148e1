"""Visium HD as training data: ``square_002um`` bins are the HR truth, pooled to grid cells or
Visium-lattice pseudo-spots for LR, through prepare's transcript route (bins as molecules)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffst.io import read_visium_hd
from diffst.io.sample import SpatialSample
from diffst.preparation.api import prepare
from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig
from diffst.synthetic import simulate_tissue, write_visium_hd_outs

CFG = PrepareConfig(
    genes=4, hr_um=8.0, factor=4, patch=8, stride=8,
    views=ViewConfig(tissue_px=16, cell_grid=2, tile_px=8),
    split=SplitConfig(block_um=128.0, layout="rows"),
)  # fmt: skip


@pytest.fixture(scope="module")
def section() -> SpatialSample:
    return simulate_tissue(width_um=512.0, height_um=512.0, n_genes=6, um_per_px=1.0, seed=11)


def test_molecules_of_a_bin_array_sum_to_its_counts(section: SpatialSample, tmp_path: Path) -> None:
    hd = read_visium_hd(write_visium_hd_outs(section, tmp_path, bin_um=2), bin_um=2)
    assert hd.spots is not None and hd.transcripts is None
    per_gene = np.zeros(len(hd.spots.genes), np.int64)
    for chunk in hd.spots.as_molecules(block=1000).iter_chunks():
        per_gene += np.bincount(chunk.gene, minlength=len(per_gene))
    np.testing.assert_array_equal(per_gene, np.asarray(hd.spots.counts.sum(axis=0)).ravel())


@pytest.mark.parametrize("lr", ["grid", "visium"])
def test_square_002um_is_binned_like_the_molecules(
    section: SpatialSample, tmp_path: Path, lr: str
) -> None:
    """Same HR map (the 2 µm bins tile the 8 µm HR bins), same LR layer on the grid, pseudo-spot
    sums within a few per cent (spot circles cut 2 µm bins; a bin counts by its centre)."""
    import dataclasses

    from diffst.preparation.api import plan_section

    cfg = dataclasses.replace(CFG, lr=lr)  # type: ignore[arg-type]
    hd = read_visium_hd(write_visium_hd_outs(section, tmp_path / "outs", bin_um=2), bin_um=2)
    _, from_bins, _ = plan_section(hd, cfg)
    _, from_molecules, _ = plan_section(section, cfg)
    assert from_bins.genes == from_molecules.genes
    assert from_bins.geometry == from_molecules.geometry
    assert from_bins.hr is not None and from_molecules.hr is not None
    np.testing.assert_array_equal(from_bins.hr, from_molecules.hr)
    if lr == "grid":
        lr_a, _ = from_bins.lr_window(0, 0, 32)
        lr_b, _ = from_molecules.lr_window(0, 0, 32)
        np.testing.assert_array_equal(lr_a, lr_b)
        return
    # pseudo-spots sit on the same lattice; those in both sections' tissue are compared
    centres_a, counts_a = from_bins.spot_centres_um, from_bins.spot_counts
    centres_b, counts_b = from_molecules.spot_centres_um, from_molecules.spot_counts
    assert centres_a is not None and centres_b is not None
    assert counts_a is not None and counts_b is not None
    key_a = {tuple(np.round(c, 6)): k for k, c in enumerate(centres_a)}
    pairs = [
        (key_a[t], k) for k, c in enumerate(centres_b) if (t := tuple(np.round(c, 6))) in key_a
    ]
    assert len(pairs) > 5
    a, b = counts_a[[i for i, _ in pairs]], counts_b[[j for _, j in pairs]]
    assert abs(a.sum() / b.sum() - 1) < 0.05


def test_visium_hd_store_from_square_002um(section: SpatialSample, tmp_path: Path) -> None:
    hd = read_visium_hd(write_visium_hd_outs(section, tmp_path / "outs", bin_um=2), bin_um=2)
    store = prepare(hd, tmp_path / "store", CFG)
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["sample"]["platform"] == "visium_hd" and store.n_patches("train") > 0
    hr = np.load(store.path / "train" / "hr.npy")
    assert hr.shape[1:] == (4, 8, 8) and hr.sum() > 0
