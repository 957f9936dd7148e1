"""Spot arrays as the HR map: grid, masks, pooling, pitch checks, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable, TissueMask
from diffst.prepare.spots_hr import SpotHRConfig, fit_lattice_to_um, pool_spots, spot_grid

POISON = 1_000_000


def _square_sample(
    pitch_um: float = 200.0,
    *,
    shape: tuple[int, int] = (6, 7),
    seed: int = 0,
    stated: bool = True,
    table_pitch: float | None = 200.0,
    counts: np.ndarray | None = None,
) -> SpatialSample:
    """Legacy-ST-like sample: square lattice, offset array coordinates, one spot missing."""
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    rc = np.stack([r.ravel() + 2, c.ravel() + 5], axis=1)[1:]  # spot (2, 5) not measured
    n = rc.shape[0]
    if counts is None:
        counts = rng.poisson(4.0, size=(n, 3)).astype(np.float64)
    centres = np.stack([rc[:, 1] * pitch_um + 30.0, rc[:, 0] * pitch_um + 50.0], axis=1)
    table = SpotTable(
        counts=sp.csr_matrix(counts),
        genes=("A", "B", "C"),
        centers_um=centres,
        diameter_um=100.0,
        ids=tuple(f"{x}x{y}" for y, x in rc),
        array_coords=rc,
        lattice="square",
        pitch_um=table_pitch,
    )
    image = SpatialImage(
        np.zeros((64, 64, 3), np.uint8), ("R", "G", "B"), AffineTransform.from_pixel_size(40.0)
    )
    meta = {} if stated else {"um_per_px_stated": False}
    return SpatialSample("sq", "legacy_st", image=image, spots=table, metadata=meta)


def test_pool_spots_hand_computed_and_masked_cells_never_enter() -> None:
    hr = np.array([[[1, 2, 3], [4, POISON, 6], [7, 8, 9]]])
    measured = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=bool)
    pooled = pool_spots(hr, measured, 2)
    np.testing.assert_array_equal(pooled.lr[0], [[1 + 2 + 4, 3 + 6], [8, 9]])
    np.testing.assert_array_equal(pooled.n_spots, [[3, 2], [1, 1]])
    assert pooled.lr_mask.all()
    # a block of unmeasured spots is masked out of the LR map
    corners = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    pooled3 = pool_spots(hr, corners, 2)
    np.testing.assert_array_equal(pooled3.lr[0], [[1, 0], [0, 9]])
    np.testing.assert_array_equal(pooled3.n_spots, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(pooled3.lr_mask, [[True, False], [False, True]])
    assert pooled3.lr.max() < POISON


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_square_grid_pooled_counts_equal_sums_of_measured_spots(factor: int) -> None:
    sample = _square_sample()
    grid = spot_grid(
        sample, ("A", "C"), SpotHRConfig(factor=factor, patch=4 * factor, stride=factor)
    )
    table = sample.spots
    assert table is not None
    assert grid.hr.shape == (2, 6, 7) and grid.frame.origin_rc == (2, 5)
    assert not grid.measured[0, 0] and grid.measured.sum() == table.n_spots
    dense = table.counts.toarray()
    # every spot lands on its own cell: grid cell (row-2, col-5)
    for k in range(table.n_spots):
        r, c = table.array_coords[k] - (2, 5)
        np.testing.assert_array_equal(grid.hr[:, r, c], dense[k, [0, 2]])
    pooled = pool_spots(grid.hr, grid.measured, factor)
    for a in range(pooled.lr.shape[1]):
        for b in range(pooled.lr.shape[2]):
            rows = (table.array_coords[:, 0] - 2) // factor == a
            cols = (table.array_coords[:, 1] - 5) // factor == b
            np.testing.assert_array_equal(pooled.lr[:, a, b], dense[rows & cols][:, [0, 2]].sum(0))
            assert pooled.n_spots[a, b] == (rows & cols).sum()
    assert pooled.lr.sum() == dense[:, [0, 2]].sum()
    assert grid.counts_summary["spots_measured"] == table.n_spots
    assert grid.pitch_um == pytest.approx(200.0)


def test_poisoned_spot_outside_tissue_never_enters_hr_or_lr() -> None:
    counts = np.full((41, 3), 2.0)
    counts[7] = POISON  # spot 7 lies outside the tissue mask below
    sample = _square_sample(counts=counts)
    table = sample.spots
    assert table is not None
    mask_px = np.ones((64, 64), dtype=bool)
    col, row = np.floor(sample.image.um_to_px.apply(table.centers_um[7:8]))[0].astype(int)
    mask_px[row, col] = False
    sample.tissue_mask = TissueMask(mask_px, sample.image.um_to_px)
    grid = spot_grid(sample, ("A", "B", "C"), SpotHRConfig())
    r, c = table.array_coords[7] - (2, 5)
    assert not grid.measured[r, c] and grid.hr.max() < POISON
    assert grid.counts_summary["spots_outside_tissue"] == 1
    assert grid.counts_summary["counts_dropped"] == 3 * POISON
    assert pool_spots(grid.hr, grid.measured, 2).lr.max() < POISON


def test_low_count_spots_masked_and_reported() -> None:
    counts = np.full((41, 3), 3.0)
    counts[[3, 10]] = [[1, 0, 0], [0, 1, 1]]
    grid = spot_grid(_square_sample(counts=counts), ("A",), SpotHRConfig(min_spot_counts=3))
    assert grid.counts_summary["spots_low_count"] == 2
    assert grid.counts_summary["spots_measured"] == 39 == grid.measured.sum()


def test_pitch_disagreement_is_an_error_and_small_deviation_passes() -> None:
    with pytest.raises(GeometryError, match=r"150 µm but .*200 µm \(25% apart"):
        spot_grid(_square_sample(150.0), ("A",), SpotHRConfig())
    with pytest.raises(GeometryError, match=r"spots\.pitch_um says 100"):
        spot_grid(_square_sample(), ("A",), SpotHRConfig(pitch_um=100.0))
    grid = spot_grid(_square_sample(190.0), ("A",), SpotHRConfig())
    assert grid.pitch_um == 200.0


def test_unstated_pixel_size_is_derived_from_the_pitch_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the reader assumed 1 µm = 1 image unit; spots are 5 px apart on a 40 µm/px image → 200 µm
    sample = _square_sample(5.0, stated=False, table_pitch=None)
    with caplog.at_level(logging.WARNING):
        grid = spot_grid(sample, ("A",), SpotHRConfig())
    assert "assumed a spot pitch of 200 µm" in caplog.text
    assert grid.image is not None and grid.image.um_per_px == pytest.approx(40.0 * 40.0)
    centres = grid.cell_centres_um(np.array([[0, 1], [1, 1]]))
    np.testing.assert_allclose(np.diff(centres, axis=0), [[0.0, 200.0]])


def test_hex_lattice_sample() -> None:
    r, c = np.meshgrid(np.arange(5), np.arange(10), indexing="ij")
    keep = (r + c) % 2 == 0
    rc = np.stack([r[keep], c[keep]], axis=1)
    x = rc[:, 1] * 50.0 + 500.0
    y = rc[:, 0] * 100.0 * np.sqrt(3) / 2 + 300.0
    counts = np.arange(rc.shape[0])[:, None] + 1
    table = SpotTable(
        sp.csr_matrix(counts), ("A",), np.stack([x, y], 1), 55.0, array_coords=rc, lattice="hex"
    )
    grid = spot_grid(SpatialSample("hex", "visium", spots=table), ("A",), SpotHRConfig())
    assert grid.hr.shape == (1, 5, 5) and grid.measured.all()
    assert sorted(grid.hr.ravel().tolist()) == list(range(1, 26))  # no spot lost or duplicated
    assert grid.hr[0, 1, 0] == 6  # (row 1, col 1) is the 6th spot in row-major order
    np.testing.assert_allclose(
        grid.cell_centres_um(np.array([[1, 0]])), [[550.0, 300 + 50 * np.sqrt(3)]]
    )


def test_bad_counts_and_lattices() -> None:
    noisy = np.full((41, 3), 2.5)
    with pytest.raises(InputError, match="not integers"):
        spot_grid(_square_sample(counts=noisy), ("A",), SpotHRConfig())
    sample = _square_sample()
    assert sample.spots is not None
    sample.spots.is_raw_counts = False
    with pytest.raises(InputError, match="not raw counts"):
        spot_grid(sample, ("A",), SpotHRConfig())
    with pytest.raises(InputError, match=r"missing from the counts: \['Z'\]"):
        spot_grid(_square_sample(), ("A", "Z"), SpotHRConfig())
    dup = _square_sample()
    assert dup.spots is not None
    dup.spots.array_coords[3] = dup.spots.array_coords[4]
    with pytest.raises(GeometryError, match="share a lattice position"):
        spot_grid(dup, ("A",), SpotHRConfig())


def test_scrambled_pixel_coordinates_are_rejected() -> None:
    ideal = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0)), -1).reshape(-1, 2)
    affine, pitch = fit_lattice_to_um(ideal, ideal * 200 + 7)
    assert pitch == pytest.approx(200.0)
    np.testing.assert_allclose(affine, [[200, 0, 7], [0, 200, 7]], atol=1e-9)
    shuffled = (ideal * 200)[np.random.default_rng(0).permutation(16)]
    with pytest.raises(GeometryError, match="do not follow the array coordinates"):
        fit_lattice_to_um(ideal, shuffled)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"multiple of spots\.factor"):
        SpotHRConfig(factor=3, patch=8)
    with pytest.raises(ConfigError, match="pitch_um"):
        SpotHRConfig(pitch_um=-1.0)
