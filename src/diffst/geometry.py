"""Explicit geometry: affine maps between the micrometre frame and image pixels.

Conventions used everywhere in diffst
-------------------------------------
* The **sample frame** is a 2-D Cartesian frame in micrometres (µm), axes ``x`` (to the
  right) and ``y`` (downwards, the way platforms such as Vizgen and Xenium store it).
* Image pixels are addressed as ``(col, row)``; pixel ``(row r, col c)`` covers the square
  ``[c, c + 1) × [r, r + 1)``, so its centre is at ``(c + 0.5, r + 0.5)``.
* An :class:`AffineTransform` maps homogeneous sample-frame points ``[x_um, y_um, 1]`` to
  ``[col, row, 1]`` of one specific image. Every image carries its own transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AffineTransform", "GeometryError"]


class GeometryError(ValueError):
    """Raised when coordinates, pixel sizes or transforms are inconsistent."""


@dataclass(frozen=True)
class AffineTransform:
    """Affine map from sample-frame micrometres to image pixels.

    Parameters
    ----------
    matrix
        ``3 × 3`` homogeneous matrix ``M`` with ``[col, row, 1]ᵀ = M · [x_um, y_um, 1]ᵀ``.
        The last row must be ``[0, 0, 1]``.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3):
            raise GeometryError(f"affine matrix must be 3×3, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise GeometryError("affine matrix contains NaN or Inf")
        if not np.allclose(m[2], [0.0, 0.0, 1.0]):
            raise GeometryError(f"affine matrix last row must be [0, 0, 1], got {m[2].tolist()}")
        if abs(np.linalg.det(m[:2, :2])) < 1e-12:
            raise GeometryError("affine matrix is singular (zero pixel size)")
        object.__setattr__(self, "matrix", m)

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_pixel_size(
        cls, um_per_px: float, origin_um: tuple[float, float] = (0.0, 0.0)
    ) -> AffineTransform:
        """Axis-aligned transform: pixel ``(0, 0)``'s corner sits at ``origin_um`` (x, y)."""
        if not (np.isfinite(um_per_px) and um_per_px > 0):
            raise GeometryError(f"µm per pixel must be a positive number, got {um_per_px!r}")
        s = 1.0 / um_per_px
        x0, y0 = origin_um
        return cls(np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s], [0.0, 0.0, 1.0]]))

    @classmethod
    def identity(cls) -> AffineTransform:
        """Identity map (the sample frame *is* the pixel frame, 1 µm = 1 px)."""
        return cls(np.eye(3))

    # ------------------------------------------------------------------ algebra
    def compose(self, then: AffineTransform) -> AffineTransform:
        """Return the map ``then ∘ self`` (apply ``self`` first)."""
        return AffineTransform(then.matrix @ self.matrix)

    def inverse(self) -> AffineTransform:
        """Inverse map (image pixels → sample frame)."""
        return AffineTransform(np.linalg.inv(self.matrix))

    def scaled(self, factor: float) -> AffineTransform:
        """Transform into an image resampled by ``factor`` (0.5 = half as many pixels per side)."""
        return self.compose(AffineTransform(np.diag([factor, factor, 1.0])))

    # ---------------------------------------------------------------- applying
    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map points ``[N, 2]`` (x_um, y_um) → ``[N, 2]`` (col, row) in pixels."""
        pts = np.asarray(xy, dtype=np.float64)
        return pts @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    def um_per_px(self) -> tuple[float, float]:
        """Pixel size along the image columns and rows, in µm (from the matrix)."""
        inv = np.linalg.inv(self.matrix[:2, :2])
        return float(np.hypot(*inv[:, 0])), float(np.hypot(*inv[:, 1]))

    def is_axis_aligned(self, tol: float = 1e-6) -> bool:
        """True when the map has no rotation or shear (only scale and translation)."""
        m = self.matrix
        scale = max(abs(m[0, 0]), abs(m[1, 1]))
        return abs(m[0, 1]) <= tol * scale and abs(m[1, 0]) <= tol * scale

    def to_list(self) -> list[list[float]]:
        """JSON-friendly form."""
        return [[float(v) for v in row] for row in self.matrix]
