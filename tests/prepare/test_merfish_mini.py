"""``prepare`` on the bundled MERFISH crop (real data, 500×450 µm, DAPI + polyT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffst.io.sample import InputError
from diffst.preparation import prepare
from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig


def test_merfish_mini_end_to_end(tmp_path: Path) -> None:
    from diffst.datasets import merfish_mini

    try:
        sample = merfish_mini()
    except InputError as err:
        pytest.skip(f"bundled data unavailable: {err}")
    cfg = PrepareConfig(
        genes=10,
        patch=32,
        stride=16,
        factor=4,
        views=ViewConfig(tissue_px=32, cell_grid=4, tile_px=8),
        split=SplitConfig(block_um=136.0),
    )
    store = prepare(sample, tmp_path / "mm", cfg)
    m = store.manifest
    assert m["geometry"]["shape_hr"] == [106, 118]  # 450 × 500 µm at 4.25 µm
    assert m["counts"]["outside_grid"] == 0  # transcripts register onto the image
    assert m["image"]["channels"] == ["DAPI", "polyT"]
    for split in ("train", "val", "test"):
        assert store.n_patches(split) > 0
        hr = np.load(store.path / split / "hr.npy")
        lr = np.load(store.path / split / "lr.npy")
        np.testing.assert_array_equal(hr.sum(axis=(2, 3)), lr.sum(axis=(2, 3)))
    assert not any(g.startswith("Blank") for g in m["genes"])
    # the DAPI tissue view is not blank: nuclei give contrast in every train patch
    tissue = np.load(store.path / "train" / "tissue.npy")
    assert (tissue[:, 0].reshape(len(tissue), -1).std(axis=1) > 5).all()
