"""Input checks shared by all readers.

Every function raises :class:`~diffst.io.sample.InputError` (bad file or field) or
:class:`~diffst.geometry.GeometryError` (inconsistent geometry) with a message that names the
file and the field, says what was expected, and — for geometry — how far off the data are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import InputError

__all__ = [
    "Extent",
    "check_axes",
    "check_counts",
    "check_inside_image",
    "check_pixel_size",
    "fit_lattice_pitch",
    "require_columns",
    "require_file",
]

INSIDE_TOLERANCE = 0.01
"""Coordinates may spill past the image border by this fraction of the image side (edge cells)."""


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise naming ``what`` it should hold."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {what} is an empty file")
    return path


def require_columns(present: Iterable[str], required: Iterable[str], file: Path | str) -> None:
    """Raise listing every column of ``required`` that ``file`` lacks."""
    have = set(present)
    missing = [str(c) for c in required if str(c) not in have]
    if missing:
        raise InputError(
            f"{file}: missing required column(s) {missing}; columns present: {sorted(have)[:20]}"
        )


@dataclass
class Extent:
    """Running bounding box of 2-D points, updated chunk by chunk (streaming readers)."""

    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    n: int = 0

    def update(self, pts: np.ndarray) -> None:
        """Add points ``[N, 2]``."""
        if len(pts) == 0:
            return
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        self.n += len(pts)


def check_inside_image(
    extent_px: Extent,
    shape_hw: tuple[int, int],
    *,
    file: Path | str,
    field: str,
    image: Path | str | None = None,
    transform: AffineTransform | None = None,
    tolerance: float = INSIDE_TOLERANCE,
) -> None:
    """Raise :class:`GeometryError` when points (already in image pixels) leave the image.

    Parameters
    ----------
    extent_px
        Bounding box of the points in ``(col, row)`` pixels.
    shape_hw
        Image ``(H, W)`` in pixels.
    file, field
        Where the coordinates come from (named in the message).
    image
        The image file (named in the message).
    transform
        The µm → px map, used to report the overshoot in µm too.
    tolerance
        Allowed spill past each border as a fraction of that image side.
    """
    if extent_px.lo is None or extent_px.hi is None:
        return
    h, w = shape_hw
    size = np.array([w, h], dtype=np.float64)
    below = -extent_px.lo
    above = extent_px.hi - size
    over = np.maximum(below, above)
    if np.all(over <= tolerance * size):
        return
    axis = int(np.argmax(over / size))
    name = ("columns (x)", "rows (y)")[axis]
    um = ""
    if transform is not None:
        um = f" ≈ {over[axis] * transform.um_per_px()[axis]:.1f} µm"
    raise GeometryError(
        f"{file}: field {field} maps outside the image {image or ''} (H×W = {h}×{w} px): "
        f"{name} span [{extent_px.lo[axis]:.1f}, {extent_px.hi[axis]:.1f}] px, "
        f"{over[axis]:.1f} px{um} past the border. Check the pixel size / transform and "
        "that the image belongs to these coordinates"
    )


def check_axes(
    extent_px: Extent,
    shape_hw: tuple[int, int],
    *,
    file: Path | str,
    fields: tuple[str, str],
    image: Path | str | None = None,
    tolerance: float = INSIDE_TOLERANCE,
) -> None:
    """Detect swapped x/y by comparing the coordinate extent with the image shape.

    Raises an actionable :class:`GeometryError` (``swap_xy=True``) when the points fit inside
    the image only with their two axes exchanged; otherwise defers to
    :func:`check_inside_image`.
    """
    if extent_px.hi is None or extent_px.lo is None:
        return
    h, w = shape_hw
    slack = tolerance * max(h, w)
    lo_ok = bool(np.all(extent_px.lo >= -slack))
    fits = lo_ok and extent_px.hi[0] <= w + slack and extent_px.hi[1] <= h + slack
    fits_swapped = lo_ok and extent_px.hi[1] <= w + slack and extent_px.hi[0] <= h + slack
    if not fits and fits_swapped:
        raise GeometryError(
            f"{file}: fields {fields[0]}/{fields[1]} look swapped: read as (column, row) they "
            f"reach ({extent_px.hi[0]:.1f}, {extent_px.hi[1]:.1f}) px, outside the {h}×{w} "
            f"(H×W) image {image or ''}, but read as (row, column) every point fits. "
            f"Pass swap_xy=True if {fields[0]} is the row and {fields[1]} the column"
        )
    check_inside_image(
        extent_px,
        shape_hw,
        file=file,
        field=f"{fields[0]}/{fields[1]}",
        image=image,
        tolerance=tolerance,
    )


def check_pixel_size(
    stated_um: float,
    derived_um: float,
    *,
    file: Path | str,
    field: str,
    source: str,
    rtol: float = 0.05,
    unit: str = " µm/px",
) -> None:
    """Raise when a stated pixel size (or an image scale, ``unit=""``) disagrees with one
    derived from another source by more than ``rtol``."""
    if not (np.isfinite(stated_um) and stated_um > 0):
        raise GeometryError(f"{file}: field {field} must be positive, got {stated_um}")
    rel = abs(stated_um - derived_um) / derived_um
    if rel > rtol:
        raise GeometryError(
            f"{file}: field {field} = {stated_um:.6g}{unit} disagrees with {derived_um:.6g}{unit} "
            f"derived from {source} ({100 * rel:.1f}% apart, tolerance {100 * rtol:.0f}%)"
        )


def check_counts(
    values: np.ndarray, *, file: Path | str, field: str, require_integer: bool
) -> bool:
    """Check count values; return True when they are all integers.

    NaN/Inf and negative values always raise; non-integer values raise only when
    ``require_integer`` (raw UMI counts expected).
    """
    v = np.asarray(values)
    if v.size == 0:
        return True
    if not np.all(np.isfinite(v)):
        raise InputError(f"{file}: field {field} contains NaN or Inf counts")
    if np.any(v < 0):
        raise InputError(f"{file}: field {field} contains negative counts (min {v.min()})")
    integer = bool(np.all(v == np.round(v)))
    if require_integer and not integer:
        bad = v[v != np.round(v)][:3]
        raise InputError(
            f"{file}: field {field} holds non-integer values (e.g. {bad.tolist()}); raw integer "
            "counts are required here (log-normalised data cannot be used)"
        )
    return integer


def fit_lattice_pitch(
    array_rc: np.ndarray, pixel_xy: np.ndarray, *, col_step: int, file: Path | str, field: str
) -> tuple[float, float]:
    """Least-squares fit ``pixel_xy ≈ A · [row, col] + b``; return (pitch_px, max residual px).

    ``col_step`` is 2 for Visium's doubled columns (neighbours differ by 2 in ``array_col``),
    1 for square lattices. The pitch is the pixel distance between column neighbours.
    """
    rc = np.asarray(array_rc, dtype=np.float64)
    if len(rc) < 3 or np.linalg.matrix_rank(np.c_[rc, np.ones(len(rc))]) < 3:
        raise InputError(f"{file}: field {field}: need ≥ 3 non-collinear spots to fit the lattice")
    design = np.c_[rc, np.ones(len(rc))]
    coef, *_ = np.linalg.lstsq(design, np.asarray(pixel_xy, dtype=np.float64), rcond=None)
    resid = np.abs(design @ coef - pixel_xy).max()
    pitch = float(np.hypot(*coef[1]) * col_step)
    return pitch, float(resid)
