"""Tissue mask, tiling, block splits and image views."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import (
    InMemoryTranscripts,
    InputError,
    SpatialImage,
    SpatialSample,
    TissueMask,
)
from diffst.sections.binning import GridGeometry
from diffst.sections.config import SplitConfig, TissueConfig, ViewConfig
from diffst.sections.tiling import patch_grid, split_blocks, tissue_mask_bins
from diffst.sections.views import image_views, tile_entropy


def _sample(pixels: np.ndarray, um_per_px: float = 1.0, **kw: object) -> SpatialSample:
    img = SpatialImage(pixels, ("g",), AffineTransform.from_pixel_size(um_per_px), kind="he")
    tx = InMemoryTranscripts(
        np.zeros(1), np.zeros(1), np.zeros(1, np.int32), ("A",), np.array([False])
    )
    return SpatialSample("s", "synthetic", image=img, transcripts=tx, **kw)  # type: ignore[arg-type]


def test_split_blocks_deterministic_complete_and_disjoint() -> None:
    cfg = SplitConfig(block_um=10.0, fractions=(0.6, 0.2, 0.2), seed=5)
    a, rows, cols = split_blocks((47, 53), 1.0, cfg)
    b, _, _ = split_blocks((47, 53), 1.0, cfg)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 5) and set(np.unique(a)) == {0, 1, 2}
    assert np.all(np.diff(rows) >= 10) and rows[-1] == 47 and cols[-1] == 53
    c, _, _ = split_blocks((47, 53), 1.0, SplitConfig(block_um=10.0, seed=6))
    assert not np.array_equal(a, c)
    grid = patch_grid(np.ones((47, 53), bool), 8, 3, rows, cols)
    split = a[grid.block_row, grid.block_col]
    cover = np.full((47, 53), -1)
    for r, c_, s in zip(grid.rows, grid.cols, split, strict=True):
        win = cover[r : r + 8, c_ : c_ + 8]
        assert np.all((win == -1) | (win == s))  # no bin shared by two splits
        win[:] = s
    assert {0, 1, 2} <= set(np.unique(cover))


def test_patch_grid_tissue_fraction_and_size_error() -> None:
    tissue = np.zeros((20, 20), bool)
    tissue[:10, :5] = True
    grid = patch_grid(tissue, 10, 10, np.array([0, 20]), np.array([0, 20]))
    assert list(zip(grid.rows, grid.cols, strict=True)) == [(0, 0), (0, 10), (10, 0), (10, 10)]
    np.testing.assert_allclose(grid.tissue_fraction, [0.5, 0, 0, 0])
    with pytest.raises(GeometryError, match="larger than the region"):
        patch_grid(tissue, 21, 5, np.array([0, 20]), np.array([0, 20]))


def test_tissue_from_image_otsu_dark_tissue() -> None:
    px = np.full((40, 40, 1), 240, np.uint8)
    px[5:25, 10:30] = 60  # dark H&E tissue
    s = _sample(px)
    geo = GridGeometry((0.0, 0.0), 2.0, 1, (20, 20))
    m = tissue_mask_bins(s, geo, TissueConfig(source="image", smooth_bins=0.5))
    assert m[7, 10] and not m[15, 2] and m[3:12, 5:15].all()


def test_tissue_from_mask_and_no_tissue_error() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    s = _sample(
        np.zeros((10, 10, 1), np.uint8),
        tissue_mask=TissueMask(mask, AffineTransform.from_pixel_size(2.0)),
    )
    geo = GridGeometry((0.0, 0.0), 4.0, 1, (5, 5))
    m = tissue_mask_bins(s, geo)
    assert m[:, :2].all() and not m[:, 3:].any()  # bin 2 centre x = 10 µm → mask col 5 (False)
    blank = _sample(np.full((20, 20, 1), 7, np.uint8))  # uniform, and dark only off the image
    with pytest.raises(InputError, match="no tissue"):
        tissue_mask_bins(
            blank, GridGeometry((0.0, 0.0), 4.0, 1, (8, 8)), TissueConfig(source="image")
        )


def test_image_views_follow_the_affine_transform() -> None:
    # image at 0.5 µm/px, offset origin (10, 20) µm: left half black, right half white
    px = np.zeros((80, 80, 1), np.uint8)
    px[:, 40:] = 255
    img = SpatialImage(px, ("g",), AffineTransform.from_pixel_size(0.5, (10.0, 20.0)))
    geo = GridGeometry((10.0, 20.0), 2.0, 2, (20, 20))
    cfg = ViewConfig(tissue_px=8, cell_grid=2, tile_px=4)
    ranges = np.array([[0.0, 255.0]])
    # patch of 10 bins = 20 µm starting at x = 20 µm: the boundary (x = 30 µm) is in its middle
    tissue, cells, score = image_views(img, (20.0, 20.0), 10, geo, cfg, ranges=ranges)
    assert tissue.shape == (1, 8, 8) and cells.shape == (4, 1, 4, 4) and score.shape == (4,)
    assert tissue[0, :, :3].max() < 20 and tissue[0, :, 5:].min() > 235
    # row-major tile grid: tile 1 is top-right (white), tile 2 bottom-left (black)
    assert cells[0][..., :2].max() < 20 and cells[1][..., 1:].min() > 235
    assert cells[2][..., :2].max() < 20 and cells[3][..., 1:].min() > 235
    # a view past the image edge is black there, not smeared
    tissue2, _, _ = image_views(img, (40.0, 20.0), 10, geo, cfg, ranges=ranges)
    assert tissue2[0, :, :3].min() > 235 and tissue2[0, :, 5:].max() == 0


def test_tile_entropy_bits() -> None:
    tiles = np.zeros((2, 1, 2, 2), np.uint8)
    tiles[1, 0, 0] = 255  # half 0, half 255 → 1 bit
    np.testing.assert_allclose(tile_entropy(tiles), [0.0, 1.0])


def test_split_rows_and_columns_layouts_span_the_section() -> None:
    rows_split, row_edges, col_edges = split_blocks((47, 53), 1.0, SplitConfig(10.0, layout="rows"))
    assert rows_split.shape == (4, 1) and col_edges.tolist() == [0, 53]
    assert row_edges[0] == 0 and row_edges[-1] == 47 and np.all(np.diff(row_edges) >= 10)
    assert set(rows_split.ravel().tolist()) == {0, 1, 2}
    cols_split, row_edges, col_edges = split_blocks(
        (47, 53), 1.0, SplitConfig(10.0, layout="columns")
    )
    assert cols_split.shape == (1, 5) and row_edges.tolist() == [0, 47]
    with pytest.raises(ConfigError, match="layout"):
        SplitConfig(10.0, layout="diagonal").validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["blocks", "rows"])
def test_evaluation_windows_sit_on_the_sections_lr_grid(layout: str) -> None:
    """Val/test windows start on multiples of the factor and each LR cell is in one block, so
    every evaluated window's LR input is a block of the section's one LR grid; training windows
    keep their stride."""
    factor, patch = 4, 12
    cfg = SplitConfig(block_um=13.0, fractions=(0.5, 0.25, 0.25), seed=3, layout=layout)  # type: ignore[arg-type]
    blocks, rows, cols = split_blocks((61, 70), 1.0, cfg, unit=factor)
    assert np.all(rows[1:-1] % factor == 0) and np.all(cols[1:-1] % factor == 0)
    assert rows[-1] == 61 and cols[-1] == 70
    grid = patch_grid(
        np.ones((61, 70), bool), patch, 2, rows, cols, aligned=blocks > 0, factor=factor
    )
    split = blocks[grid.block_row, grid.block_col]
    evaluated = split > 0
    assert evaluated.any() and (~evaluated).any()
    assert np.all(grid.rows[evaluated] % factor == 0) and np.all(grid.cols[evaluated] % factor == 0)
    assert np.any(grid.rows[~evaluated] % factor) or np.any(grid.cols[~evaluated] % factor)
    for r, c in zip(grid.rows, grid.cols, strict=True):  # windows stay inside their block
        b_r = np.searchsorted(rows, r, side="right") - 1
        b_c = np.searchsorted(cols, c, side="right") - 1
        assert r + patch <= rows[b_r + 1] and c + patch <= cols[b_c + 1]
    order = np.lexsort((grid.cols, grid.rows))
    np.testing.assert_array_equal(order, np.arange(len(order)))  # row-major
