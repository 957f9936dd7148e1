"""PatchDataset on a synthetic store: keys, shapes, ranges, determinism, StoreInfo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffst.config import ConfigError
from diffst.data import PatchDataset, StoreInfo, inverse_normalise, load_manifest
from diffst.io.sample import InputError
from diffst.keys import BatchKey
from diffst.preparation import prepare
from tests.prepare.synthetic import small_config, synthetic_sample


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "store"
    prepare(synthetic_sample(8000), out, small_config())
    return out


def test_item_keys_shapes_and_ranges(store: Path) -> None:
    ds = PatchDataset(store, "train")
    info = ds.info
    item = ds[0]
    assert set(item) == set(BatchKey)
    g, p, q = len(info.genes), info.patch, info.lr_size
    assert item[BatchKey.HR].shape == (g, p, p) and item[BatchKey.LR].shape == (g, q, q)
    assert item[BatchKey.TISSUE].shape == (2, 16, 16)
    assert item[BatchKey.CELLS].shape == (16, 2, 4, 4)
    assert item[BatchKey.MASK].shape == (1, p, p) and item[BatchKey.LR_MASK].shape == (1, q, q)
    assert item[BatchKey.NORM_SCALE].shape == (g,) and item[BatchKey.INDEX].item() == 0
    for key in (BatchKey.TISSUE, BatchKey.CELLS, BatchKey.MASK):
        assert 0 <= item[key].min() and item[key].max() <= 1
    assert item[BatchKey.HR].min() >= -1 and item[BatchKey.HR].max() <= 1.5
    back = inverse_normalise(item[BatchKey.HR].double(), info.normalisation)
    torch.testing.assert_close(back.float(), item[BatchKey.HR_COUNTS], atol=1e-3, rtol=0)


def test_augmentation_deterministic_per_seed_epoch_index(store: Path) -> None:
    ds = PatchDataset(store, "train", augment=True, seed=7)
    ds.set_epoch(3)
    a = ds[2]
    ds2 = PatchDataset(store, "train", augment=True, seed=7)
    ds2.set_epoch(3)
    b = ds2[2]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        seen.add(ds[2][BatchKey.HR_COUNTS].numpy().tobytes())
    assert len(seen) > 1  # different epochs draw different symmetries
    # totals are invariant under every symmetry, and LR still pools HR exactly
    item = ds[2]
    counts = item[BatchKey.HR_COUNTS]
    lr = counts.reshape(len(counts), 4, 2, 4, 2).sum(dim=(2, 4))
    torch.testing.assert_close(lr, item[BatchKey.LR_COUNTS])


def test_crop_and_errors(store: Path) -> None:
    ds = PatchDataset(store, "val", crop=4)
    item = ds[0]
    assert item[BatchKey.HR].shape[-1] == 4 and item[BatchKey.LR].shape[-1] == 2
    full = PatchDataset(store, "val")[0]  # without augmentation the crop is centred
    torch.testing.assert_close(item[BatchKey.HR_COUNTS], full[BatchKey.HR_COUNTS][:, 2:6, 2:6])
    assert item[BatchKey.CELLS].shape == (4, 2, 4, 4) and item[BatchKey.TISSUE].shape[-1] == 8
    with pytest.raises(ConfigError, match="crop"):
        PatchDataset(store, "val", crop=3)
    with pytest.raises(ConfigError, match="split"):
        PatchDataset(store, "holdout")
    with pytest.raises(InputError, match=r"manifest\.json"):
        load_manifest(store.parent / "nowhere")


def test_normalisation_override(store: Path) -> None:
    ds = PatchDataset(store, "val", normalisation="minmax_patch")
    item = ds[0]
    hr = item[BatchKey.HR]
    assert hr.max() <= 1 + 1e-6 and hr.min() >= -1 - 1e-6
    back = inverse_normalise(hr.double(), ds.norm, item[BatchKey.NORM_SCALE].double())
    torch.testing.assert_close(back.float(), item[BatchKey.HR_COUNTS], atol=1e-3, rtol=0)
    with pytest.raises(ConfigError, match="normalisation"):
        PatchDataset(store, "val", normalisation="zscore")


def test_pickles_without_array_data(store: Path) -> None:
    import pickle

    ds = PatchDataset(store, "train", augment=True, seed=2)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # paths and metadata only, not the patches
    clone = pickle.loads(blob)
    torch.testing.assert_close(clone[1][BatchKey.HR], ds[1][BatchKey.HR])


def test_store_info(store: Path) -> None:
    info = StoreInfo.load(store)
    assert info.factor == 2 and info.patch == 8 and info.lr_size == 4
    assert info.channels == ("DAPI", "polyT")
    assert sum(info.n_patches.values()) == sum(len(PatchDataset(store, s)) for s in info.n_patches)
    pear = np.asarray(info.coexpr["pearson"])
    assert pear.shape == (4, 4) and np.allclose(np.diag(pear), 1) and np.allclose(pear, pear.T)


def test_store_info_reads_a_manifest_that_names_its_stain(store: Path, tmp_path: Path) -> None:
    """``views.stain`` is a string beside the integer view sizes; it must not break loading."""
    import json
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["views"]["stain"] = "reinhard"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    info = StoreInfo.load(copy)
    assert info.views == {"tissue_px": 16, "cell_grid": 4, "tile_px": 4}
    assert len(PatchDataset(copy, "train")) == len(PatchDataset(store, "train"))
