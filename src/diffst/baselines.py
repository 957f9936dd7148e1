"""Interpolation baselines: the LR map upsampled to the HR grid without any learning.

The LR map holds counts per LR cell (the sum over its HR units); the baselines first turn it
into the *measured-unit mean* of every cell — the cell's counts divided by the number of HR
units that were measured in it (``units``: ``factor²`` bins of a full grid cell, fewer at the
section border, or the measured spots of a pooled spot block) — so their output is on the HR
scale (counts per HR unit) and nearest-neighbour upsampling re-aggregates exactly to the LR
input. Cells without a measurement (``lr_mask`` false) take the mean of the nearest measured
cell before interpolating, so they do not read as zero expression.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.transform import resize

__all__ = ["bicubic_upsample", "cell_means", "interpolation_baseline", "nearest_upsample"]


def _check(lr: np.ndarray, factor: int, out_shape: tuple[int, int] | None) -> tuple[int, int]:
    if lr.ndim != 3:
        raise ValueError(f"LR map must be [G, h, w], got shape {lr.shape}")
    if factor < 1:
        raise ValueError(f"factor must be ≥ 1, got {factor}")
    full = (lr.shape[1] * factor, lr.shape[2] * factor)
    if out_shape is None:
        return full
    fits = all(f - factor < o <= f for f, o in zip(full, out_shape, strict=True))
    if not fits:
        raise ValueError(
            f"HR shape {out_shape} is not covered by an LR map {lr.shape[1:]} at factor {factor}"
        )
    return out_shape


def nearest_upsample(
    lr: np.ndarray, factor: int, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Repeat each LR cell over its ``factor × factor`` HR bins, divided by ``factor²``.

    Parameters
    ----------
    lr
        ``[G, h, w]`` counts per LR cell.
    factor
        HR bins per LR cell side.
    out_shape
        ``(H, W)`` of the HR grid (default ``(h·factor, w·factor)``; a partial last row/column of
        LR cells is cropped).

    Returns
    -------
    ``[G, H, W]`` float32 counts per HR bin.
    """
    h, w = _check(lr, factor, out_shape)
    up = np.repeat(np.repeat(np.asarray(lr, dtype=np.float32), factor, axis=1), factor, axis=2)
    return up[:, :h, :w] / np.float32(factor * factor)


def bicubic_upsample(
    lr: np.ndarray, factor: int, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Bicubic interpolation of the LR map (cell centres → bin centres), divided by ``factor²``.

    Uses :func:`skimage.transform.resize` (order 3, edge mode, no anti-aliasing), which maps cell
    centres to the centres of their HR blocks; negative overshoots are clipped to 0.

    Shapes and units as :func:`nearest_upsample`.
    """
    h, w = _check(lr, factor, out_shape)
    g = lr.shape[0]
    full = (lr.shape[1] * factor, lr.shape[2] * factor)
    up = resize(
        np.asarray(lr, dtype=np.float64),
        (g, *full),
        order=3,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    up = np.clip(up[:, :h, :w], 0.0, None) / (factor * factor)
    return up.astype(np.float32)


def cell_means(lr: np.ndarray, units: np.ndarray, lr_mask: np.ndarray | None = None) -> np.ndarray:
    """Measured-unit mean of every LR cell, unmeasured cells filled from the nearest measured one.

    Parameters
    ----------
    lr
        ``[G, h, w]`` counts per LR cell.
    units
        ``[h, w]`` HR units measured in each cell (bins, or spots).
    lr_mask
        ``[h, w]`` bool, cells holding a measurement (default: ``units > 0``).

    Returns
    -------
    ``[G, h, w]`` float64 counts per HR unit.
    """
    lr = np.asarray(lr, dtype=np.float64)
    units = np.asarray(units, dtype=np.float64)
    measured = units > 0 if lr_mask is None else np.asarray(lr_mask, bool) & (units > 0)
    if not measured.any():
        return np.zeros_like(lr)
    means = np.where(measured, lr / np.where(measured, units, 1.0), 0.0)
    if measured.all():
        return means
    _, (ii, jj) = ndimage.distance_transform_edt(~measured, return_indices=True)
    return means[:, ii, jj]


def interpolation_baseline(
    name: Literal["nearest", "bicubic"],
    lr: np.ndarray,
    factor: int,
    out_shape: tuple[int, int] | None = None,
    *,
    units: np.ndarray | None = None,
    lr_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Nearest or bicubic upsampling of the LR map, by name.

    Without ``units`` each cell is divided by ``factor²`` (every bin measured). With ``units``
    (``[h, w]`` measured HR units per cell) and ``lr_mask``, the measured-unit means of
    :func:`cell_means` are upsampled instead (``factor²`` is then 1: the means are already per
    unit), so partly measured cells are not diluted and unmeasured cells do not read as zero.
    """
    if name not in ("nearest", "bicubic"):
        raise ValueError(f"unknown interpolation baseline {name!r}; use 'nearest' or 'bicubic'")
    upsample = nearest_upsample if name == "nearest" else bicubic_upsample
    if units is None:
        return upsample(lr, factor, out_shape)
    means = cell_means(lr, units, lr_mask) * factor * factor
    return upsample(means, factor, out_shape)
