"""Fixed gene–gene adjacency matrices for the gene-correlation graph of the LR encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffst.config import ConfigError

__all__ = ["coexpression_adjacency"]


def coexpression_adjacency(
    totals: Any = None,
    pearson: Any = None,
    kind: str = "intensity",
    topk: int = 8,
) -> torch.Tensor:
    """Row-normalised gene–gene adjacency ``[G, G]`` (float32, every row sums to 1).

    Parameters
    ----------
    totals
        ``[G]`` per-gene total counts ``s`` on the training split (needed for ``"intensity"``).
    pearson
        ``[G, G]`` Pearson correlation of the genes on the training split (for ``"pearson*"``).
    kind
        ``"intensity"`` — the paper's co-expression intensity ``A_ij = max(s_i/s_j, s_j/s_i)``;
        pairs with a zero total carry no information and get 0 off the diagonal;
        ``"pearson"`` — ``|r_ij|``; ``"pearson_positive"`` — ``max(r_ij, 0)``;
        ``"pearson_topk"`` — ``|r_ij|`` kept for each gene's ``topk`` most correlated genes only
        (sparse; meaningful and affordable for large panels). Undefined correlations (NaN,
        constant genes) count as 0. Every kind has self loops ``A_ii = 1``.
    topk
        Neighbours per gene of ``"pearson_topk"``.

    Returns
    -------
    torch.Tensor
        ``[G, G]`` float32 adjacency with rows summing to 1.
    """
    if kind == "intensity":
        raw = _intensity(_as_array(totals, "totals", ndim=1))
    elif kind in ("pearson", "pearson_positive", "pearson_topk"):
        r = _as_array(pearson, "pearson", ndim=2)
        if r.shape[0] != r.shape[1]:
            raise ValueError(f"pearson: square [G, G] matrix needed, got shape {r.shape}")
        r = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
        raw = np.clip(r, 0.0, None) if kind == "pearson_positive" else np.abs(r)
        if kind == "pearson_topk":
            off = raw.copy()
            np.fill_diagonal(off, -np.inf)
            k = min(int(topk), raw.shape[0] - 1)
            keep = np.zeros_like(raw, dtype=bool)
            if k > 0:
                idx = np.argpartition(-off, k - 1, axis=1)[:, :k]
                np.put_along_axis(keep, idx, True, axis=1)
            raw = np.where(keep, raw, 0.0)
    else:
        raise ConfigError(
            f"model.adjacency_kind: {kind!r} is not 'intensity', 'pearson', 'pearson_positive' "
            "or 'pearson_topk'"
        )
    np.fill_diagonal(raw, 1.0)
    raw /= raw.sum(axis=1, keepdims=True)
    return torch.from_numpy(raw.astype(np.float32))


def _intensity(s: np.ndarray) -> np.ndarray:
    """``max(s_i/s_j, s_j/s_i)`` for positive totals, 0 where either total is zero."""
    if (s < 0).any() or not np.isfinite(s).all():
        raise ValueError("totals: per-gene totals must be finite and non-negative")
    positive = s > 0
    safe = np.where(positive, s, 1.0)
    ratio = safe[:, None] / safe[None, :]
    raw = np.maximum(ratio, ratio.T)
    raw[~(positive[:, None] & positive[None, :])] = 0.0
    return raw


def _as_array(value: Any, name: str, *, ndim: int) -> np.ndarray:
    if value is None:
        raise ValueError(f"{name}: required for this adjacency kind")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty {ndim}-D array, got shape {arr.shape}")
    return arr
