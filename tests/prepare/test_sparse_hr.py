"""A sparse HR map (prepare.hr_storage=sparse) reads like the dense one, and the store
prepared from it is the same."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.preparation.api import prepare
from diffst.sections.binning import (
    GridGeometry,
    bin_transcripts_sparse,
    bin_transcripts_with_stats,
    pool_counts,
    pool_grid,
)
from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig
from diffst.synthetic import simulate_tissue


@pytest.fixture(scope="module")
def sample():  # type: ignore[no-untyped-def]
    return simulate_tissue(width_um=500.0, height_um=420.0, n_genes=9, um_per_px=2.0, seed=5)


def test_sparse_counts_read_like_the_dense_map(sample) -> None:  # type: ignore[no-untyped-def]
    genes = tuple(sample.transcripts.genes[:7])
    geo = GridGeometry.covering(sample.image.extent_um(), 10.0, 4)
    dense, dstats, ddens = bin_transcripts_with_stats(sample.transcripts, genes, geo, density=True)
    sparse, sstats, sdens = bin_transcripts_sparse(
        sample.transcripts, genes, geo, density=True, max_chunk=777
    )
    assert sparse.shape == dense.shape and sparse.dtype == dense.dtype
    assert (sstats.kept, sstats.outside_grid, sstats.total) == (
        dstats.kept, dstats.outside_grid, dstats.total,
    )  # fmt: skip
    np.testing.assert_array_equal(sdens, ddens)
    np.testing.assert_array_equal(sparse.toarray(), dense)
    for window in ((0, 16, 0, 16), (5, 30, 7, 19), (30, 60, 40, 99), (41, 44, 0, 3)):
        r0, r1, c0, c1 = window
        np.testing.assert_array_equal(sparse[:, r0:r1, c0:c1], dense[:, r0:r1, c0:c1])
    np.testing.assert_array_equal(sparse.sum(axis=0), dense.sum(axis=0))
    np.testing.assert_array_equal(pool_counts(sparse, 4), pool_grid(dense, 4))
    index = np.array([5, 0, 77, 3])
    np.testing.assert_array_equal(sparse.bins(index), dense.reshape(7, -1)[:, index])
    with pytest.raises(TypeError):
        sparse[0]


def test_a_store_prepared_from_a_sparse_map_is_the_dense_one(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = PrepareConfig(
        genes=6, hr_um=10.0, factor=4, patch=8, stride=4,
        views=ViewConfig(tissue_px=16, cell_grid=4, tile_px=8),
        split=SplitConfig(block_um=120.0, layout="rows"),
    )  # fmt: skip
    prepare(sample, tmp_path / "dense", replace(cfg, hr_storage="dense"))
    prepare(sample, tmp_path / "sparse", replace(cfg, hr_storage="sparse"))
    a = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    b = json.loads((tmp_path / "sparse" / "manifest.json").read_text())
    for key in ("genes", "normalisation", "splits"):
        assert a[key] == b[key], key
    assert a["coexpr"]["s"] == b["coexpr"]["s"]
    np.testing.assert_allclose(a["coexpr"]["pearson"], b["coexpr"]["pearson"], rtol=0, atol=1e-12)
    for split in ("train", "val", "test"):
        for name in ("hr", "lr", "mask", "lr_mask", "origin_um"):
            x = np.load(tmp_path / "dense" / split / f"{name}.npy")
            y = np.load(tmp_path / "sparse" / split / f"{name}.npy")
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ConfigError, match="hr_storage"):
        replace(cfg, hr_storage="csr")
