"""Gene co-expression statistics for the gene-correlation graph, from training bins only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["coexpression", "coexpression_of", "train_bins_mask"]


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


def coexpression(counts: np.ndarray, max_bytes: int = 1 << 28) -> dict[str, list]:
    """Per-gene totals and the Pearson gene–gene correlation over bins.

    Parameters
    ----------
    counts
        ``[G, n]`` raw counts of ``n`` train bins.
    max_bytes
        Bound of the float64 temporaries: more bins than fit are taken in chunks
        (:func:`coexpression_of`).

    Returns
    -------
    dict
        ``{"s": [G] totals, "pearson": [G][G]}``; genes without variance correlate 0 with every
        other gene and 1 with themselves.
    """
    g, n = counts.shape
    return coexpression_of(lambda a, b: counts[:, a:b], g, n, max_bytes)


def coexpression_of(
    columns: Callable[[int, int], np.ndarray], n_genes: int, n_bins: int,
    max_bytes: int = 1 << 28,
) -> dict[str, list]:  # fmt: skip
    """:func:`coexpression` of ``n_bins`` bins whose counts ``[G, b − a]`` ``columns(a, b)``
    returns, chunk by chunk, so that the float64 work stays below about ``max_bytes`` whatever
    the number of bins (one chunk computes exactly what one array would).

    Pearson r of genes ``i, j`` is ``Σ cᵢ cⱼ / √(Σ cᵢ² Σ cⱼ²)`` with ``c`` the counts centred on
    each gene's mean; the sums run over chunks of bins.
    """
    step = max(2, max_bytes // (8 * max(n_genes, 1)))
    if n_bins <= step:  # one chunk
        x = np.asarray(columns(0, n_bins)).astype(np.float64)
        s = x.sum(axis=1)
        if n_bins < 2:
            return {"s": s.tolist(), "pearson": np.eye(n_genes).tolist()}
        centred = x - x.mean(axis=1, keepdims=True)
        sd = np.sqrt((centred**2).sum(axis=1))
        ok = sd > 0
        corr = np.zeros((n_genes, n_genes))
        z = centred[ok] / sd[ok, None]
        corr[np.ix_(ok, ok)] = np.clip(z @ z.T, -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
        return {"s": s.tolist(), "pearson": corr.tolist()}
    s = np.zeros(n_genes)
    for a in range(0, n_bins, step):
        s += np.asarray(columns(a, min(a + step, n_bins))).sum(axis=1, dtype=np.float64)
    mean = s / n_bins
    squares = np.zeros(n_genes)
    gram = np.zeros((n_genes, n_genes))
    for a in range(0, n_bins, step):
        c = np.asarray(columns(a, min(a + step, n_bins))).astype(np.float64) - mean[:, None]
        squares += (c**2).sum(axis=1)
        gram += c @ c.T
    sd = np.sqrt(squares)
    ok = sd > 0
    corr = np.zeros((n_genes, n_genes))
    corr[np.ix_(ok, ok)] = np.clip(gram[np.ix_(ok, ok)] / np.outer(sd[ok], sd[ok]), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return {"s": s.tolist(), "pearson": corr.tolist()}
