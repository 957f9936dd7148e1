"""Dataset transforms: count normalisation (exactly invertible) and paired augmentation.

Normalisations (recorded in ``manifest["normalisation"]``):

* ``log1p_gene``: ``y = log1p(c) / m_g`` with ``m_g`` the 99.9th percentile of ``log1p`` HR
  counts of gene g over in-tissue train bins (floored at ``log1p(1)``), then ``x = 2y − 1``.
  Values above the percentile map slightly above 1 (no clipping, so the inverse is exact).
* ``minmax_patch`` (the paper's protocol): per patch and gene ``y = log1p(c) / max_patch log1p(c)``
  (the minimum of count data is 0, so min-max reduces to this); the scale is returned per patch.
* ``none``: ``x = c`` (raw counts as float).

LR counts are first divided by ``lr_bins``, the number of HR bins one LR value covers (``factor²``
for grid pooling, ``π(d/2)²/hr_um²`` for Visium spots), so LR and HR share one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from diffst.config import ConfigError

__all__ = [
    "Augment",
    "NormStats",
    "apply_augment",
    "crop_unit",
    "draw_augment",
    "inverse_normalise",
    "normalisation_stats",
    "normalise",
]

_PERCENTILE = 99.9
_FLOOR = float(np.log1p(1.0))


@dataclass(frozen=True)
class NormStats:
    """Normalisation kind and statistics."""

    kind: str  # "log1p_gene" | "minmax_patch" | "none"
    lr_bins: float  # HR bins covered by one LR value
    gene_scale: tuple[float, ...] = ()  # m_g per gene (used by log1p_gene; always recorded)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest ``normalisation``)."""
        return {"kind": self.kind, "lr_bins": self.lr_bins, "gene_scale": list(self.gene_scale)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["kind"]), float(data["lr_bins"]), tuple(data.get("gene_scale", ())))


def normalisation_stats(train_counts: np.ndarray, kind: str, lr_bins: float) -> NormStats:
    """Statistics from in-tissue train HR bins ``train_counts [G, n]`` (raw counts).

    The per-gene scale ``m_g`` is recorded whatever ``kind`` is, so a dataset may switch to
    ``log1p_gene`` later without re-preparing the store.
    """
    if kind not in ("log1p_gene", "minmax_patch", "none"):
        raise ConfigError(f"normalisation: unknown kind {kind!r}")
    if train_counts.shape[1] == 0:
        raise ConfigError("normalisation: no in-tissue train bins to compute statistics from")
    m = np.percentile(np.log1p(train_counts.astype(np.float64)), _PERCENTILE, axis=1)
    return NormStats(kind, float(lr_bins), tuple(float(v) for v in np.maximum(m, _FLOOR)))


def normalise(
    hr_counts: np.ndarray, lr_counts: np.ndarray, stats: NormStats
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts → model scale.

    Parameters
    ----------
    hr_counts
        ``[G, H, W]`` raw HR counts.
    lr_counts
        ``[G, h, w]`` raw LR counts.

    Returns
    -------
    (np.ndarray, np.ndarray, np.ndarray)
        ``hr [G, H, W]``, ``lr [G, h, w]`` float32 (≈ [-1, 1]) and the scale ``[G]`` used.
    """
    hr = hr_counts.astype(np.float64)
    lr = lr_counts.astype(np.float64) / stats.lr_bins
    if stats.kind == "none":
        return hr.astype(np.float32), lr.astype(np.float32), np.ones(len(hr), np.float32)
    hr, lr = np.log1p(hr), np.log1p(lr)
    if stats.kind == "log1p_gene":
        scale = np.asarray(stats.gene_scale, dtype=np.float64)
    else:
        scale = np.maximum(hr.reshape(len(hr), -1).max(axis=1), _FLOOR)
    s = scale[:, None, None]
    return (
        (2 * hr / s - 1).astype(np.float32),
        (2 * lr / s - 1).astype(np.float32),
        scale.astype(np.float32),
    )


def inverse_normalise(x: Any, stats: NormStats, scale: Any = None) -> Any:
    """Model scale → HR counts (numpy array or torch tensor ``[..., G, H, W]``).

    ``scale`` (``[..., G]``, e.g. the batch's ``NORM_SCALE``) is required for ``minmax_patch``
    and defaults to the stored per-gene scale for ``log1p_gene``.
    """
    if stats.kind == "none":
        return x
    if scale is None:
        if stats.kind != "log1p_gene":
            raise ConfigError("inverse_normalise: minmax_patch needs the per-patch scale")
        scale = np.asarray(stats.gene_scale, dtype=np.float64)
    is_torch = type(x).__module__.startswith("torch")
    if is_torch:
        import torch

        st = torch.as_tensor(scale, dtype=x.dtype, device=x.device)[..., None, None]
        return torch.expm1((x + 1) / 2 * st)
    sn = np.asarray(scale, dtype=np.float64)[..., None, None]
    return np.expm1((np.asarray(x, dtype=np.float64) + 1) / 2 * sn)


@dataclass(frozen=True)
class Augment:
    """One element of the square's symmetry group plus an optional crop (HR bins)."""

    transpose: bool = False  # swap rows and columns (applied first)
    flip_rows: bool = False  # reverse the row order
    flip_cols: bool = False  # reverse the column order
    crop_row: int = 0  # top-left HR row of the crop
    crop_col: int = 0  # top-left HR column of the crop
    crop: int | None = None  # crop side in HR bins (None: no crop)


def crop_unit(patch: int, factor: int, tissue_px: int, cell_grid: int) -> int:
    """Smallest step (HR bins) at which HR, LR, tissue view and tile grid can all be cut."""
    for u in range(factor, patch + 1, factor):
        if (u * tissue_px) % patch == 0 and (u * cell_grid) % patch == 0:
            return u
    raise ConfigError(
        f"no crop aligns patch {patch}, factor {factor}, tissue view {tissue_px} px and "
        f"{cell_grid}×{cell_grid} tiles"
    )


def draw_augment(
    rng: np.random.Generator, patch: int, factor: int, crop: int | None, unit: int
) -> Augment:
    """Random symmetry (+ crop). When ``patch % factor != 0`` the last LR row/column is
    partial, so only the symmetries keeping the top-left corner (identity, transpose) are used."""
    full = patch % factor == 0
    transpose = bool(rng.integers(2))
    flip_rows = bool(rng.integers(2)) if full else False
    flip_cols = bool(rng.integers(2)) if full else False
    if crop is None:
        return Augment(transpose, flip_rows, flip_cols)
    n_pos = (patch - crop) // unit + 1
    r, c = (int(v) * unit for v in rng.integers(n_pos, size=2))
    return Augment(transpose, flip_rows, flip_cols, r, c, crop)


def _sym(a: np.ndarray, aug: Augment) -> np.ndarray:
    if aug.transpose:
        a = np.swapaxes(a, -2, -1)
    if aug.flip_rows:
        a = np.flip(a, -2)
    if aug.flip_cols:
        a = np.flip(a, -1)
    return np.ascontiguousarray(a)


def _cut(a: np.ndarray, aug: Augment, patch: int) -> np.ndarray:
    """Crop ``a [..., L, L]`` (L units per ``patch`` HR bins) to the augment's window."""
    if aug.crop is None:
        return a
    side = a.shape[-1]
    r0, c0, n = (v * side // patch for v in (aug.crop_row, aug.crop_col, aug.crop))
    return a[..., r0 : r0 + n, c0 : c0 + n]


def apply_augment(arrays: dict[str, np.ndarray], aug: Augment, patch: int) -> dict[str, np.ndarray]:
    """Apply ``aug`` identically to every modality of one patch.

    ``arrays`` holds ``hr [G,P,P]``, ``lr [G,p,p]``, ``mask [P,P]``, ``lr_mask [p,p]``,
    ``tissue [C,S,S]``, ``cells [n·n,C,t,t]`` (row-major tile grid) and ``cell_score [n·n]``.
    Tiles are cropped and permuted on the n×n grid and each tile is transformed itself, which
    equals transforming the mosaic the tiles form.
    """
    cells = arrays["cells"]
    nn, c, t, _ = cells.shape
    n = round(nn**0.5)
    mosaic = cells.reshape(n, n, c, t, t).transpose(2, 0, 3, 1, 4).reshape(c, n * t, n * t)
    score = arrays["cell_score"].reshape(n, n)
    out = {
        k: _sym(_cut(v, aug, patch), aug)
        for k, v in arrays.items()
        if k not in ("cells", "cell_score")
    }
    mosaic = _sym(_cut(mosaic, aug, patch), aug)
    score = _sym(_cut(score, aug, patch), aug)
    m = mosaic.shape[-1] // t
    out["cells"] = np.ascontiguousarray(
        mosaic.reshape(c, m, t, m, t).transpose(1, 3, 0, 2, 4).reshape(m * m, c, t, t)
    )
    out["cell_score"] = score.reshape(-1)
    return out
