"""Gene co-expression statistics for the gene-correlation graph, from training bins only."""

from __future__ import annotations

import numpy as np

__all__ = ["coexpression", "train_bins_mask"]


def train_bins_mask(
    shape_hr: tuple[int, int], rows: np.ndarray, cols: np.ndarray, patch: int, tissue: np.ndarray
) -> np.ndarray:
    """``[H, W]`` bool: in-tissue HR bins covered by at least one train patch.

    Overlapping patches count each bin once, so statistics are not biased by the stride.
    """
    covered = np.zeros(shape_hr, dtype=bool)
    for r, c in zip(rows, cols, strict=True):
        covered[r : r + patch, c : c + patch] = True
    return covered & tissue


def coexpression(counts: np.ndarray) -> dict[str, list]:
    """Per-gene totals and the Pearson gene–gene correlation over bins.

    Parameters
    ----------
    counts
        ``[G, n]`` raw counts of ``n`` train bins.

    Returns
    -------
    dict
        ``{"s": [G] totals, "pearson": [G][G]}``; genes without variance correlate 0 with every
        other gene and 1 with themselves.
    """
    x = counts.astype(np.float64)
    s = x.sum(axis=1)
    if x.shape[1] < 2:
        corr = np.eye(len(x))
    else:
        centred = x - x.mean(axis=1, keepdims=True)
        sd = np.sqrt((centred**2).sum(axis=1))
        ok = sd > 0
        corr = np.zeros((len(x), len(x)))
        z = centred[ok] / sd[ok, None]
        corr[np.ix_(ok, ok)] = np.clip(z @ z.T, -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
    return {"s": s.tolist(), "pearson": corr.tolist()}
