"""Normalisation round trips and paired augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffst.config import ConfigError
from diffst.data.transforms import (
    Augment,
    NormStats,
    apply_augment,
    crop_unit,
    draw_augment,
    inverse_normalise,
    normalisation_stats,
    normalise,
)


def test_log1p_gene_roundtrip_exact_and_lr_scale() -> None:
    rng = np.random.default_rng(0)
    hr = rng.poisson(3.0, size=(3, 8, 8))
    stats = normalisation_stats(hr.reshape(3, -1), "log1p_gene", lr_bins=4.0)
    assert len(stats.gene_scale) == 3 and min(stats.gene_scale) >= np.log1p(1)
    lr = hr.reshape(3, 4, 2, 4, 2).sum(axis=(2, 4))
    x_hr, _, scale = normalise(hr, lr, stats)
    np.testing.assert_allclose(inverse_normalise(x_hr, stats), hr, atol=1e-4)
    np.testing.assert_allclose(scale, stats.gene_scale, rtol=1e-6)
    # LR is per-HR-bin: a constant map has the same normalised value in HR and LR
    const = np.full((3, 8, 8), 2)
    a, b, _ = normalise(const, const.reshape(3, 4, 2, 4, 2).sum(axis=(2, 4)), stats)
    np.testing.assert_allclose(a[:, :4, :4], b, atol=1e-6)
    t = inverse_normalise(torch.from_numpy(x_hr).double(), stats)
    np.testing.assert_allclose(t.numpy(), hr, atol=1e-6)
    assert NormStats.from_dict(stats.to_dict()) == stats


def test_minmax_patch_and_none() -> None:
    hr = np.array([[[0, 3], [1, 7]], [[0, 0], [0, 0]]])
    stats = normalisation_stats(hr.reshape(2, -1), "minmax_patch", lr_bins=1.0)
    x, _, scale = normalise(hr, hr.astype(float), stats)
    assert x[0].max() == pytest.approx(1.0) and x[0].min() == pytest.approx(-1.0)
    np.testing.assert_allclose(scale, [np.log1p(7), np.log1p(1)], rtol=1e-6)
    np.testing.assert_allclose(inverse_normalise(x, stats, scale), hr, atol=1e-5)
    with pytest.raises(ConfigError):
        inverse_normalise(x, stats)
    none = normalisation_stats(hr.reshape(2, -1), "none", lr_bins=4.0)
    xn, ln, _ = normalise(hr, hr * 4.0, none)
    np.testing.assert_array_equal(xn, hr) and np.testing.assert_array_equal(ln, hr)


def _patch(p: int = 8, f: int = 2, n: int = 4, t: int = 2, s: int = 8) -> dict[str, np.ndarray]:
    """A patch whose modalities all encode one asymmetric pattern on the same frame."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 50, size=(p, p))
    tissue_px = np.kron(base, np.ones((s // p, s // p), dtype=np.int64))
    mosaic = np.kron(base, np.ones((n * t // p, n * t // p), dtype=np.int64))
    cells = mosaic.reshape(n, t, n, t).transpose(0, 2, 1, 3).reshape(n * n, 1, t, t)
    return {
        "hr": np.stack([base, 2 * base]),
        "lr": np.stack([base, 2 * base]).reshape(2, p // f, f, p // f, f).sum(axis=(2, 4)),
        "mask": (base > 20).astype(np.uint8),
        "lr_mask": np.ones((p // f, p // f), np.uint8),
        "tissue": tissue_px[None].astype(np.uint8),
        "cells": cells.astype(np.uint8),
        "cell_score": np.arange(n * n, dtype=np.float32),
    }


def _consistent(out: dict[str, np.ndarray], f: int, n: int) -> None:
    hr = out["hr"]
    p = hr.shape[-1]
    np.testing.assert_array_equal(out["mask"], (hr[0] > 20).astype(np.uint8))
    np.testing.assert_array_equal(out["lr"], hr.reshape(2, p // f, f, p // f, f).sum(axis=(2, 4)))
    s = out["tissue"].shape[-1]
    np.testing.assert_array_equal(out["tissue"][0], np.kron(hr[0], np.ones((s // p, s // p))))
    m = round(len(out["cells"]) ** 0.5)
    t = out["cells"].shape[-1]
    mosaic = out["cells"][:, 0].reshape(m, m, t, t).transpose(0, 2, 1, 3).reshape(m * t, m * t)
    np.testing.assert_array_equal(mosaic, np.kron(hr[0], np.ones((m * t // p, m * t // p))))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("flip_rows", [False, True])
@pytest.mark.parametrize("flip_cols", [False, True])
def test_every_symmetry_is_applied_identically(
    transpose: bool, flip_rows: bool, flip_cols: bool
) -> None:
    arrays = _patch()
    out = apply_augment(arrays, Augment(transpose, flip_rows, flip_cols), 8)
    _consistent(out, 2, 4)
    # the tile scores travel with their tiles
    grid = arrays["cell_score"].reshape(4, 4)
    if transpose:
        grid = grid.T
    if flip_rows:
        grid = grid[::-1]
    if flip_cols:
        grid = grid[:, ::-1]
    np.testing.assert_array_equal(out["cell_score"], grid.ravel())


def test_rotation_permutes_tiles_and_rotates_each_tile() -> None:
    arrays = _patch()
    rot = Augment(transpose=True, flip_rows=True)  # = 90° counter-clockwise rotation
    out = apply_augment(arrays, rot, 8)
    np.testing.assert_array_equal(out["hr"], np.rot90(arrays["hr"], 1, axes=(1, 2)))
    # tile (0, 0) after rotation is old tile (0, 3), itself rotated
    np.testing.assert_array_equal(out["cells"][0, 0], np.rot90(arrays["cells"][3, 0]))


def test_crop_is_aligned_across_modalities() -> None:
    arrays = _patch()
    unit = crop_unit(8, 2, 8, 4)
    assert unit == 2
    out = apply_augment(arrays, Augment(crop_row=2, crop_col=4, crop=4), 8)
    np.testing.assert_array_equal(out["hr"], arrays["hr"][:, 2:6, 4:8])
    assert out["lr"].shape == (2, 2, 2) and out["cells"].shape == (4, 1, 2, 2)
    _consistent(out, 2, 2)
    with pytest.raises(ConfigError):
        crop_unit(8, 3, 5, 4)  # 5-px view: no HR step maps to whole pixels
    assert crop_unit(8, 3, 8, 4) == 6


def test_draw_is_deterministic_and_partial_lr_keeps_corner() -> None:
    a = draw_augment(np.random.default_rng([1, 2, 3]), 8, 2, 4, 2)
    b = draw_augment(np.random.default_rng([1, 2, 3]), 8, 2, 4, 2)
    assert a == b and a.crop == 4 and a.crop_row % 2 == 0
    draws = [draw_augment(np.random.default_rng(k), 10, 3, None, 3) for k in range(20)]
    assert all(not d.flip_rows and not d.flip_cols for d in draws)  # 10 % 3 ≠ 0
    assert any(d.transpose for d in draws)
