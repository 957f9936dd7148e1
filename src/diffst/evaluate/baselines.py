"""Interpolation baselines: the LR map upsampled to the HR grid without any learning.

The LR map holds counts per LR cell (the sum over ``factor × factor`` HR bins); the baselines
first divide by ``factor²`` so that their output is on the HR scale (counts per HR bin) and a
nearest-neighbour upsampling re-aggregates exactly to the LR input.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from skimage.transform import resize

__all__ = ["bicubic_upsample", "interpolation_baseline", "nearest_upsample"]


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


def interpolation_baseline(
    name: Literal["nearest", "bicubic"],
    lr: np.ndarray,
    factor: int,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Dispatch to :func:`nearest_upsample` or :func:`bicubic_upsample` by name."""
    if name == "nearest":
        return nearest_upsample(lr, factor, out_shape)
    if name == "bicubic":
        return bicubic_upsample(lr, factor, out_shape)
    raise ValueError(f"unknown interpolation baseline {name!r}; use 'nearest' or 'bicubic'")
