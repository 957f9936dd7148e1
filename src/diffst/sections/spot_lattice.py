"""Spot lattices ↔ regular grids: the spot array itself as the high-resolution map.

Two lattices occur in spot-based platforms (``docs/spot_lattices.md`` has the figures):

* ``"square"`` — legacy Spatial Transcriptomics: integer array coordinates ``(x, y)`` on a square
  lattice of pitch 200 µm. Grid cell ``(r, c)`` is lattice position ``(row, col) = (y, x)``
  shifted to start at zero: ``r = row − row₀``, ``c = col − col₀``.
* ``"hex"`` — 10x Visium: ``(array_row, array_col)`` with *doubled* columns; on occupied positions
  ``array_row + array_col`` has one parity ``π`` (0 on Visium slides), neighbours in a row are two
  columns apart and odd rows sit half a pitch to the right. The grid is
  ``r = array_row − row₀``, ``c = (array_col − col₀) // 2``. Inside a row the columns share a
  parity, so halving is injective there; rows stay rows, so the map is a bijection from the
  occupied hex positions onto grid cells (no spot lost, none duplicated). The inverse is
  ``array_col = col₀ + 2c + ((π − array_row − col₀) mod 2)``.

Consequence for geometry: on a hex grid, grid columns are one pitch apart but the rows are
``pitch·√3/2`` apart and alternate rows are offset by half a pitch, so a ``k×k`` grid block covers
a slightly sheared parallelogram of the slide. :func:`grid_centres` gives the ideal lattice
position of each grid cell in lattice units, used to fit the lattice → µm map.

All arrays use ``(row, col)`` order, like :attr:`diffst.io.sample.SpotTable.array_coords`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from diffst.geometry import GeometryError

__all__ = [
    "ROW_SPACING",
    "Lattice",
    "LatticeFrame",
    "grid_cells",
    "grid_centres",
    "grid_to_lattice",
    "lattice_to_grid",
]

Lattice = Literal["hex", "square"]

#: Distance between neighbouring lattice rows, in units of the pitch (hex: √3/2).
ROW_SPACING: dict[str, float] = {"square": 1.0, "hex": float(np.sqrt(3.0) / 2.0)}


@dataclass(frozen=True)
class LatticeFrame:
    """Where a regular grid sits on a spot lattice (what :func:`grid_to_lattice` needs).

    Attributes
    ----------
    lattice
        ``"square"`` or ``"hex"`` (doubled columns).
    origin_rc
        Lattice ``(row, col)`` offsets ``(row₀, col₀)``: the smallest occupied row and column.
    shape
        Grid shape ``(H, W)`` in grid cells (one cell per lattice position).
    parity
        Hex lattices: the constant ``(array_row + array_col) mod 2`` of occupied positions;
        0 for square lattices.
    """

    lattice: Lattice
    origin_rc: tuple[int, int]
    shape: tuple[int, int]
    parity: int = 0


def _as_int_coords(coords: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(coords)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise GeometryError(f"{what} must be [n, 2] (row, col), got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr.astype(np.float64))):
        raise GeometryError(f"{what} contain NaN or Inf")
    rounded = np.round(arr.astype(np.float64))
    if arr.size and not np.array_equal(rounded, arr.astype(np.float64)):
        raise GeometryError(f"{what} must be integers, e.g. {arr[rounded != arr][:3].tolist()}")
    return rounded.astype(np.int64)


def _check_lattice(lattice: str) -> None:
    if lattice not in ("hex", "square"):
        raise GeometryError(f"unknown spot lattice {lattice!r}; expected 'hex' or 'square'")


def lattice_to_grid(array_coords: np.ndarray, lattice: Lattice) -> tuple[np.ndarray, LatticeFrame]:
    """Map lattice positions to cells of a regular grid (a bijection on occupied positions).

    Parameters
    ----------
    array_coords
        ``[n, 2]`` integer lattice coordinates ``(row, col)``; for hex lattices ``col`` is the
        doubled column (``array_col`` of Visium). Negative and offset coordinates are allowed.
    lattice
        ``"square"`` (legacy ST) or ``"hex"`` (Visium).

    Returns
    -------
    grid_rc
        ``[n, 2]`` int64 grid cells ``(r, c)``, each in ``[0, H) × [0, W)``.
    frame
        :class:`LatticeFrame` with the grid ``shape (H, W)`` and the offsets for the inverse.

    Raises
    ------
    GeometryError
        Non-integer coordinates, mixed hex parities, or two spots on one lattice position.
    """
    _check_lattice(lattice)
    rc = _as_int_coords(array_coords, "spot array coordinates")
    if rc.shape[0] == 0:
        raise GeometryError("no spots: cannot build a grid from an empty lattice")
    row0, col0 = int(rc[:, 0].min()), int(rc[:, 1].min())
    parity = 0
    if lattice == "hex":
        parities = np.unique((rc[:, 0] + rc[:, 1]) % 2)
        if parities.size != 1:
            raise GeometryError(
                "hex lattice coordinates mix parities of array_row + array_col; Visium uses "
                "doubled columns (array_col parity equals array_row parity)"
            )
        parity = int(parities[0])
        grid = np.stack([rc[:, 0] - row0, (rc[:, 1] - col0) // 2], axis=1)
    else:
        grid = rc - np.array([row0, col0])
    shape = (int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1)
    flat = grid[:, 0] * shape[1] + grid[:, 1]
    uniq, counts = np.unique(flat, return_counts=True)
    if uniq.size != flat.size:
        dup = np.flatnonzero(np.isin(flat, uniq[counts > 1]))[:3]
        raise GeometryError(
            f"{flat.size - uniq.size} spot(s) share a lattice position, e.g. array coordinates "
            f"{rc[dup].tolist()}"
        )
    return grid.astype(np.int64), LatticeFrame(lattice, (row0, col0), shape, parity)


def grid_cells(array_coords: np.ndarray, frame: LatticeFrame) -> np.ndarray:
    """Grid cells of lattice positions in an existing frame (e.g. to read predictions back
    per barcode: ``values[:, r, c]`` for ``(r, c)`` in the result).

    Parameters
    ----------
    array_coords
        ``[n, 2]`` integer lattice ``(row, col)``.
    frame
        A frame from :func:`lattice_to_grid`.

    Returns
    -------
    ``[n, 2]`` int64 grid cells ``(r, c)``.

    Raises
    ------
    GeometryError
        A position outside the grid, or (hex) of the wrong parity.
    """
    rc = _as_int_coords(array_coords, "spot array coordinates")
    row0, col0 = frame.origin_rc
    rows = rc[:, 0] - row0
    if frame.lattice == "hex":
        bad = np.flatnonzero((rc[:, 0] + rc[:, 1]) % 2 != frame.parity)
        if bad.size:
            raise GeometryError(
                f"array coordinates {rc[bad[:3]].tolist()} are not on this hex lattice "
                f"(array_row + array_col must have parity {frame.parity})"
            )
        cols = (rc[:, 1] - col0) // 2
    else:
        cols = rc[:, 1] - col0
    grid = np.stack([rows, cols], axis=1)
    h, w = frame.shape
    outside = np.flatnonzero((rows < 0) | (rows >= h) | (cols < 0) | (cols >= w))
    if outside.size:
        raise GeometryError(
            f"array coordinates {rc[outside[:3]].tolist()} lie outside the {h}×{w} grid"
        )
    return grid.astype(np.int64)


def grid_to_lattice(grid_rc: np.ndarray, frame: LatticeFrame) -> np.ndarray:
    """Inverse of :func:`lattice_to_grid`: grid cells → lattice ``(row, col)``.

    Parameters
    ----------
    grid_rc
        ``[n, 2]`` integer grid cells ``(r, c)`` (any cell of the grid, occupied or not).
    frame
        The frame returned by :func:`lattice_to_grid`.

    Returns
    -------
    ``[n, 2]`` int64 lattice coordinates ``(row, col)`` (doubled columns for hex lattices).
    """
    _check_lattice(frame.lattice)
    grid = _as_int_coords(grid_rc, "grid cells")
    row0, col0 = frame.origin_rc
    rows = grid[:, 0] + row0
    if frame.lattice == "hex":
        cols = col0 + 2 * grid[:, 1] + np.mod(frame.parity - rows - col0, 2)
    else:
        cols = grid[:, 1] + col0
    return np.stack([rows, cols], axis=1).astype(np.int64)


def grid_centres(grid_rc: np.ndarray, frame: LatticeFrame) -> np.ndarray:
    """Ideal spot centres of grid cells in lattice units (pitch = 1), ``x`` right, ``y`` down.

    Parameters
    ----------
    grid_rc
        ``[n, 2]`` grid cells ``(r, c)``.
    frame
        The lattice frame.

    Returns
    -------
    ``[n, 2]`` float64 ``(x, y)``: square lattices ``(col, row)``; hex lattices
    ``(array_col / 2, array_row · √3/2)``, i.e. odd rows shifted by half a pitch.
    """
    rc = grid_to_lattice(grid_rc, frame).astype(np.float64)
    if frame.lattice == "hex":
        return np.stack([rc[:, 1] / 2.0, rc[:, 0] * ROW_SPACING["hex"]], axis=1)
    return np.stack([rc[:, 1], rc[:, 0]], axis=1)
