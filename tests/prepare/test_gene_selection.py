"""Gene panels by spatial variability: Moran's I on the LR grid of the training blocks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.io.sample import InMemoryTranscripts, SpatialSample
from diffst.preparation.api import plan_section
from diffst.preparation.plan import spatial_variability
from diffst.sections.config import PrepareConfig, SplitConfig


def _maps(h: int = 12, w: int = 12) -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    domain = np.zeros((h, w))
    domain[:, : w // 2] = 20.0  # left half expressed, right half silent
    random = rng.poisson(10.0, size=(h, w)).astype(float)
    constant = np.full((h, w), 5.0)
    return sp.csr_matrix(np.stack([domain, random, constant], axis=-1).reshape(h * w, 3))


def test_morans_i_separates_domains_from_noise() -> None:
    moran = spatial_variability(_maps(), (12, 12), np.ones((12, 12), bool), block=2)
    assert moran[0] > 0.8  # one sharp domain boundary
    assert abs(moran[1]) < 0.2  # independent noise: I ≈ -1/(n-1)
    assert moran[2] == 0.0  # constant: no variance


def test_only_the_marked_cells_count() -> None:
    cells = np.zeros((12, 12), bool)
    cells[:, 6:] = True  # the silent half only
    assert spatial_variability(_maps(), (12, 12), cells)[0] == 0.0


def _sample() -> SpatialSample:
    """Gene ``busy`` everywhere (more molecules), gene ``patterned`` in the left half only."""
    from diffst.synthetic import simulate_tissue

    base = simulate_tissue(width_um=400.0, height_um=400.0, n_genes=2, um_per_px=2.0, seed=1)
    rng = np.random.default_rng(1)
    n_busy, n_pat = 40_000, 15_000
    x = np.r_[rng.uniform(0, 400, n_busy), rng.uniform(0, 200, n_pat)]
    y = np.r_[rng.uniform(0, 400, n_busy), rng.uniform(0, 400, n_pat)]
    gene = np.r_[np.zeros(n_busy, np.int32), np.ones(n_pat, np.int32)]
    tx = InMemoryTranscripts(x, y, gene, ("busy", "patterned"), np.zeros(2, bool))
    import dataclasses

    return dataclasses.replace(base, transcripts=tx)


@pytest.mark.parametrize(("selection", "expected"), [("counts", "busy"), ("spatial", "patterned")])
def test_panel_by_counts_or_by_spatial_structure(selection: str, expected: str) -> None:
    cfg = PrepareConfig(
        genes=1, hr_um=10.0, factor=4, patch=8, stride=8, gene_selection=selection,  # type: ignore[arg-type]
        split=SplitConfig(block_um=120.0, layout="rows"),
    )  # fmt: skip
    _, section, _ = plan_section(_sample(), cfg)
    assert section.genes == (expected,)


def test_unknown_selection_is_refused() -> None:
    with pytest.raises(ConfigError, match="gene_selection"):
        PrepareConfig(gene_selection="variance")  # type: ignore[arg-type]
