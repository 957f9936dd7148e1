"""Spot lattice ↔ grid mapping: bijection, inverse, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.geometry import GeometryError
from diffst.sections.spot_lattice import (
    grid_cells,
    grid_centres,
    grid_to_lattice,
    lattice_to_grid,
)


def _visium_positions(rows: int = 78, cols: int = 128) -> np.ndarray:
    """All positions of a Visium slide: array_col parity equals array_row parity."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    keep = (r + c) % 2 == 0
    return np.stack([r[keep], c[keep]], axis=1)


def test_visium_full_slide_is_a_bijection_onto_the_grid() -> None:
    coords = _visium_positions()
    grid, frame = lattice_to_grid(coords, "hex")
    assert frame.shape == (78, 64)
    assert coords.shape[0] == 78 * 64 == 4992  # every Visium spot, none lost
    flat = grid[:, 0] * frame.shape[1] + grid[:, 1]
    assert np.unique(flat).size == flat.size  # none duplicated
    np.testing.assert_array_equal(grid_to_lattice(grid, frame), coords)


def test_hand_computed_hex_cells() -> None:
    coords = np.array([[0, 0], [0, 2], [1, 1], [1, 3], [2, 0]])
    grid, frame = lattice_to_grid(coords, "hex")
    np.testing.assert_array_equal(grid, [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])
    assert frame.shape == (3, 2)
    # odd rows sit half a pitch to the right; rows are √3/2 pitch apart
    np.testing.assert_allclose(
        grid_centres(grid, frame)[:3], [[0, 0], [1, 0], [0.5, np.sqrt(3) / 2]], atol=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lattice", ["hex", "square"])
def test_round_trip_random_subsets_with_offsets(lattice: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if lattice == "hex":
        full = _visium_positions(20, 30)
        # negative and odd offsets; an odd row shift flips the parity to 1
        full = full + np.array([rng.integers(-50, 50), 2 * rng.integers(-20, 20) + 1])
    else:
        r, c = np.meshgrid(np.arange(-7, 25), np.arange(3, 40), indexing="ij")
        full = np.stack([r.ravel(), c.ravel()], axis=1)
    coords = full[rng.random(full.shape[0]) < 0.4]
    coords = coords[rng.permutation(coords.shape[0])]
    grid, frame = lattice_to_grid(coords, lattice)  # type: ignore[arg-type]
    assert grid.min() >= 0
    assert (grid[:, 0] < frame.shape[0]).all() and (grid[:, 1] < frame.shape[1]).all()
    np.testing.assert_array_equal(grid_to_lattice(grid, frame), coords)
    # and grid → lattice → grid on every cell of the grid
    h, w = frame.shape
    cells = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    back = grid_to_lattice(cells, frame)
    if lattice == "hex":
        assert np.unique((back.sum(axis=1)) % 2).size == 1
    regrid = np.stack(
        [
            back[:, 0] - frame.origin_rc[0],
            (back[:, 1] - frame.origin_rc[1]) // (2 if lattice == "hex" else 1),
        ],
        axis=1,
    )
    np.testing.assert_array_equal(regrid, cells)


def test_square_lattice_is_the_grid_itself() -> None:
    coords = np.array([[5, -2], [6, -2], [5, 0]])
    grid, frame = lattice_to_grid(coords, "square")
    np.testing.assert_array_equal(grid, [[0, 0], [1, 0], [0, 2]])
    assert frame.origin_rc == (5, -2) and frame.shape == (2, 3)
    np.testing.assert_array_equal(grid_centres(grid, frame), [[-2, 5], [-2, 6], [0, 5]])


def test_bad_lattices_raise() -> None:
    with pytest.raises(GeometryError, match="share a lattice position"):
        lattice_to_grid(np.array([[1, 1], [2, 2], [1, 1]]), "square")
    with pytest.raises(GeometryError, match="mix parities"):
        lattice_to_grid(np.array([[0, 0], [0, 1]]), "hex")
    with pytest.raises(GeometryError, match="integers"):
        lattice_to_grid(np.array([[0.5, 1.0]]), "square")
    with pytest.raises(GeometryError, match="unknown spot lattice"):
        lattice_to_grid(np.array([[0, 0]]), "triangle")  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match="empty"):
        lattice_to_grid(np.zeros((0, 2)), "hex")


@pytest.mark.parametrize("lattice", ["hex", "square"])
def test_grid_cells_reads_back_in_an_existing_frame(lattice: str) -> None:
    coords = (
        _visium_positions(6, 10) + np.array([3, -7])
        if lattice == "hex"
        else np.argwhere(np.ones((5, 4)))
    )
    grid, frame = lattice_to_grid(coords, lattice)  # type: ignore[arg-type]
    order = np.random.default_rng(0).permutation(len(coords))
    np.testing.assert_array_equal(grid_cells(coords[order], frame), grid[order])
    with pytest.raises(GeometryError, match="outside"):
        grid_cells(coords[:1] + np.array([100, 100]), frame)
    if lattice == "hex":
        with pytest.raises(GeometryError, match="parity"):
            grid_cells(coords[:1] + np.array([0, 1]), frame)
