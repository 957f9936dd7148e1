"""End-to-end ``prepare`` on a synthetic section: store contents, invariants, errors, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import InMemoryTranscripts, InputError, SpatialSample, TissueMask
from diffst.preparation import prepare
from diffst.sections.config import SplitConfig
from tests.prepare.synthetic import GENES, small_config, synthetic_sample

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "store"
    prepare(synthetic_sample(), out, small_config(), command="diffst prepare --test")
    return out


def _load(store: Path, split: str, name: str) -> np.ndarray:
    return np.load(store / split / f"{name}.npy")


def test_store_layout_and_manifest(store: Path) -> None:
    m = json.loads((store / "manifest.json").read_text())
    assert m["genes"] == ["Gad1", "Slc17a7", "Mbp", "Pvalb"]  # top-4 by count, control excluded
    assert m["geometry"]["shape_hr"] == [45, 50] and m["geometry"]["lr_size"] == 4
    assert m["command"] == "diffst prepare --test" and m["diffst_version"]
    assert m["image"]["channels"] == ["DAPI", "polyT"]
    for split in SPLITS:
        n = m["splits"][split]["n_patches"]
        assert n > 0
        assert _load(store, split, "hr").shape == (n, 4, 8, 8)
        assert _load(store, split, "lr").shape == (n, 4, 4, 4)
        assert _load(store, split, "tissue").shape == (n, 2, 16, 16)
        assert _load(store, split, "cells").shape == (n, 16, 2, 4, 4)
        assert _load(store, split, "cell_score").shape == (n, 16)
    for name in ("summary.md", "alignment.png", "config.yaml"):
        assert (store / name).stat().st_size > 0
    assert "| train |" in (store / "summary.md").read_text()
    assert not list(store.parent.glob(".store.tmp-*"))


def test_hr_total_equals_lr_total_per_patch(store: Path) -> None:
    for split in SPLITS:
        hr, lr = _load(store, split, "hr"), _load(store, split, "lr")
        np.testing.assert_array_equal(hr.sum(axis=(2, 3)), lr.sum(axis=(2, 3)))


def test_patches_match_whole_section_counts(store: Path) -> None:
    sample = synthetic_sample()
    tx = sample.transcripts
    assert isinstance(tx, InMemoryTranscripts)
    hr = _load(store, "val", "hr")
    origin = _load(store, "val", "origin_um")
    x0, y0 = origin[0]
    inside = (tx.x_um >= x0) & (tx.x_um < x0 + 32) & (tx.y_um >= y0) & (tx.y_um < y0 + 32)
    assert hr[0, 0].sum() == np.count_nonzero(inside & (tx.gene == 0))


def _canvas(store: Path, split: str) -> np.ndarray:
    canvas = np.zeros((45, 50), bool)
    for ox, oy in _load(store, split, "origin_um"):
        r, c = round(oy / 4), round(ox / 4)
        canvas[r : r + 8, c : c + 8] = True
    return canvas


def test_splits_do_not_overlap(store: Path) -> None:
    c = [_canvas(store, s) for s in SPLITS]
    assert not (c[0] & c[1]).any() and not (c[0] & c[2]).any() and not (c[1] & c[2]).any()


def test_coexpr_is_train_only(tmp_path: Path, store: Path) -> None:
    full = TissueMask(np.ones((10, 10), bool), AffineTransform.from_pixel_size(20.0))
    base = synthetic_sample()
    base.tissue_mask = full
    cfg = small_config(genes=5)
    clean = prepare(base, tmp_path / "clean", cfg).manifest
    # poison: many extra molecules of gene 4 in val/test areas only
    train_area = _canvas(tmp_path / "clean", "train")
    other = _canvas(tmp_path / "clean", "val") | _canvas(tmp_path / "clean", "test")
    rows, cols = np.nonzero(other & ~train_area)
    tx = base.transcripts
    assert isinstance(tx, InMemoryTranscripts)
    k = np.repeat(np.arange(len(rows)), 30)
    x = np.concatenate([tx.x_um, cols[k] * 4.0 + 2.0])
    y = np.concatenate([tx.y_um, rows[k] * 4.0 + 2.0])
    g = np.concatenate([tx.gene, np.full(len(k), 4, np.int32)])
    poisoned = SpatialSample(
        "p",
        "synthetic",
        image=base.image,
        tissue_mask=full,
        transcripts=InMemoryTranscripts(x, y, g, GENES, tx.control),
    )
    top = dataclasses.replace(cfg, gene_list=None)
    dirty = prepare(poisoned, tmp_path / "dirty", top).manifest
    clean_top = prepare(base, tmp_path / "clean_top", top).manifest
    assert GENES[int(np.argmax(np.bincount(g)))] == "Sst"  # the poison tops the section...
    assert dirty["genes"] == clean_top["genes"]  # ...but not the panel (training blocks only)
    assert dirty["genes"][0] != "Sst"
    s_clean = dict(zip(clean["genes"], clean["coexpr"]["s"], strict=True))
    s_dirty = dict(zip(dirty["genes"], dirty["coexpr"]["s"], strict=True))
    assert all(s_clean[g] == s_dirty[g] for g in s_dirty)  # ...nor the train statistics
    scale = dict(zip(clean["genes"], clean["normalisation"]["gene_scale"], strict=True))
    assert scale == dict(zip(dirty["genes"], dirty["normalisation"]["gene_scale"], strict=True))
    train_hr = np.zeros((5, 45, 50))
    for patch, (ox, oy) in zip(
        _load(tmp_path / "clean", "train", "hr"),
        _load(tmp_path / "clean", "train", "origin_um"),
        strict=True,
    ):
        r, c = round(oy / 4), round(ox / 4)
        train_hr[:, r : r + 8, c : c + 8] = patch
    np.testing.assert_allclose(clean["coexpr"]["s"], train_hr.sum(axis=(1, 2)))


def test_visium_mode_uses_spot_sums(tmp_path: Path) -> None:
    cfg = small_config(lr="visium", spot_diameter_um=10.0, spot_pitch_um=20.0)
    out = prepare(synthetic_sample(), tmp_path / "v", cfg)
    counts = np.load(out.path / "spots_counts.npy")
    lr, mask = _load(out.path, "train", "lr"), _load(out.path, "train", "lr_mask")
    assert mask.any()
    spot_rows = {tuple(r) for r in counts.tolist()}
    for p in range(min(5, len(lr))):
        for a, b in zip(*np.nonzero(mask[p]), strict=True):
            assert tuple(lr[p, :, a, b].astype(int).tolist()) in spot_rows
    np.testing.assert_allclose(out.manifest["geometry"]["lr_bins"], np.pi * 25 / 16)


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffst.sections.views as views

    calls = {"n": 0}
    real = views.image_views

    def flaky(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(views, "image_views", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(synthetic_sample(), tmp_path / "s", small_config())
    assert list(tmp_path.iterdir()) == []


def _shifted(dx: float, dy: float = 0.0, swap: bool = False) -> SpatialSample:
    s = synthetic_sample(2000)
    tx = s.transcripts
    assert isinstance(tx, InMemoryTranscripts)
    x, y = (tx.y_um, tx.x_um) if swap else (tx.x_um + dx, tx.y_um + dy)
    s.transcripts = InMemoryTranscripts(x, y, tx.gene, tx.genes, tx.control)
    return s


def _bad_pixel_size() -> SpatialSample:
    s = synthetic_sample(2000)
    assert s.image is not None
    s.image.um_to_px = AffineTransform.from_pixel_size(0.25)
    return s


def _no_tissue() -> SpatialSample:
    s = synthetic_sample(2000)
    s.tissue_mask = TissueMask(np.zeros((4, 4), bool), AffineTransform.from_pixel_size(100.0))
    return s


def _no_image() -> SpatialSample:
    s = synthetic_sample(2000)
    s.image = None
    return s


@pytest.mark.parametrize(
    ("make", "cfg_kw", "err", "match"),
    [
        (lambda: _shifted(500.0), {}, GeometryError, "outside the image"),
        (lambda: _shifted(0, 0, swap=True), {}, GeometryError, "swapped"),
        (_bad_pixel_size, {}, GeometryError, "µm-per-pixel"),
        (_no_tissue, {}, InputError, "no tissue"),
        (_no_image, {}, InputError, "no image"),
        (lambda: synthetic_sample(2000), {"patch": 64, "stride": 64}, GeometryError, "larger than"),
        (lambda: synthetic_sample(2000), {"genes": 6}, InputError, "non-control"),
        (
            lambda: synthetic_sample(2000),
            {"split": SplitConfig(block_um=150.0)},
            ConfigError,
            "is empty",
        ),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    tmp_path: Path, make: object, cfg_kw: dict, err: type, match: str
) -> None:
    with pytest.raises(err, match=match):
        prepare(make(), tmp_path / "out", small_config(**cfg_kw))  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []


def test_gene_list_errors(tmp_path: Path) -> None:
    bad = tmp_path / "genes.txt"
    bad.write_text("Mbp\nNope1\n# comment\nNope2\n")
    with pytest.raises(InputError, match=r"genes.txt.*\['Nope1', 'Nope2'\]"):
        prepare(synthetic_sample(2000), tmp_path / "o", small_config(gene_list=bad))
    bad.write_text("Mbp\nBlank-1\n")
    with pytest.raises(InputError, match="control"):
        prepare(synthetic_sample(2000), tmp_path / "o", small_config(gene_list=bad))
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(tmp_path: Path, store: Path) -> None:
    with pytest.raises(ConfigError, match="overwrite"):
        prepare(synthetic_sample(2000), store, small_config())
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="not a diffst store"):
        prepare(synthetic_sample(2000), tmp_path / "other", small_config(), overwrite=True)
