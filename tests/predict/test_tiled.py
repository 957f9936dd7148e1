"""Tiling, blending windows, per-tile seeds and streaming stitching."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.geometry import GeometryError
from diffst.predict.tiled import (
    TileAccumulator,
    blend_window,
    iter_batches,
    tile_origins,
    tile_seeds,
    tile_stride,
)


def test_stride_is_multiple_of_factor_and_overlap_at_least_requested() -> None:
    assert tile_stride(32, 8, 4) == 24
    assert tile_stride(32, 10, 4) == 20  # rounded down: realised overlap 12 ≥ 10
    assert tile_stride(32, None, 4) == 24  # default overlap P // 4
    assert tile_stride(8, 7, 4) == 4  # never below one LR cell
    with pytest.raises(GeometryError, match="smaller than the patch"):
        tile_stride(16, 16, 4)


def test_origins_cover_every_tissue_bin_and_skip_empty_tiles() -> None:
    tissue = np.zeros((50, 70), dtype=bool)
    tissue[5:20, 3:30] = True
    tissue[45:50, 65:70] = True
    origins = tile_origins(tissue, patch=16, stride=12)
    covered = np.zeros_like(tissue)
    for r, c in origins:
        covered[r : r + 16, c : c + 16] = True
    assert covered[tissue].all()
    # every kept tile holds tissue, and the empty middle of the section has no tile
    for r, c in origins:
        assert tissue[r : r + 16, c : c + 16].any()
    assert len(origins) < len(np.arange(0, 50, 12)) * len(np.arange(0, 70, 12))
    assert (origins % 12 == 0).all()


def test_origins_of_grid_smaller_than_patch() -> None:
    origins = tile_origins(np.ones((5, 7), dtype=bool), patch=16, stride=8)
    np.testing.assert_array_equal(origins, [[0, 0]])
    assert tile_origins(np.zeros((5, 7), dtype=bool), 16, 8).shape == (0, 2)


def test_cosine_window_is_smooth_positive_and_peaks_in_the_centre() -> None:
    w = blend_window(8, "cosine")
    assert w.shape == (8, 8)
    assert w.min() > 0
    np.testing.assert_allclose(w.min(), np.sin(np.pi / 16) ** 4)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[3, 3] == w.max()
    np.testing.assert_array_equal(blend_window(4, "uniform"), np.ones((4, 4)))
    with pytest.raises(ValueError, match="unknown blend window"):
        blend_window(4, "gauss")


@pytest.mark.parametrize("kind", ["cosine", "uniform"])
def test_stitching_a_known_field_is_exact(kind: str) -> None:
    rng = np.random.default_rng(0)
    h, w, patch, stride = 37, 53, 16, 12
    field = rng.normal(size=(2, 3, h, w))
    tissue = np.ones((h, w), dtype=bool)
    origins = tile_origins(tissue, patch, stride)
    acc = TileAccumulator((2, 3), (h, w), blend_window(patch, kind), dtype=np.float64)
    padded = np.pad(field, ((0, 0), (0, 0), (0, patch), (0, patch)), constant_values=1e9)
    for batch in iter_batches(len(origins), 3):
        for r, c in origins[batch]:
            acc.add((r, c), padded[..., r : r + patch, c : c + patch])
    assert acc.covered().all()
    np.testing.assert_allclose(acc.result(), field, rtol=0, atol=1e-12)


def test_stitching_weights_and_uncovered_bins() -> None:
    acc = TileAccumulator((1,), (6, 6), np.ones((4, 4)))
    acc.add((0, 0), np.full((1, 4, 4), 2.0))
    acc.add((0, 2), np.full((1, 4, 4), 4.0))
    out = acc.result()
    np.testing.assert_allclose(out[0, 0, :2], 2.0)
    np.testing.assert_allclose(out[0, 0, 2:4], 3.0)  # mean of the two overlapping tiles
    np.testing.assert_allclose(out[0, 0, 4:6], 4.0)
    assert np.isnan(out[0, 5]).all()  # rows 4, 5 never covered
    with pytest.raises(ValueError, match="expected"):
        acc.add((0, 0), np.zeros((1, 3, 3)))
    with pytest.raises(GeometryError, match="outside the grid"):
        acc.add((6, 0), np.zeros((1, 4, 4)))


def test_merging_accumulators_equals_one_accumulator() -> None:
    rng = np.random.default_rng(1)
    tiles = [((r, c), rng.normal(size=(1, 8, 8))) for r in (0, 4, 8) for c in (0, 4)]
    win = blend_window(8)
    one = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    a = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    b = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    for k, (o, t) in enumerate(tiles):
        one.add(o, t)
        (a if k % 2 else b).add(o, t)
    a.merge(b)
    np.testing.assert_allclose(a.result(), one.result())


def test_tile_seeds_depend_only_on_seed_and_tile() -> None:
    assert tile_seeds(0, 5, 4) == tile_seeds(0, 5, 4)
    assert tile_seeds(0, 5, 4) != tile_seeds(0, 6, 4)
    assert tile_seeds(0, 5, 4) != tile_seeds(1, 5, 4)
    assert len(set(tile_seeds(3, 0, 8))) == 8
    assert [list(b) for b in iter_batches(5, 2)] == [[0, 1], [2, 3], [4]]
