"""Per-gene accuracy metrics of super-resolved maps against the measured HR map.

Every metric is computed **per gene on the tissue mask** and summarised over genes by
:func:`summarise` (mean over the genes where it is defined, median, and the number of genes
where it is undefined — a constant gene has no correlation; it is reported as NaN and counted,
never silently dropped).

Two protocols:

* ``counts`` — on the count scale (counts per HR bin), over the whole evaluated region;
  Pearson is **signed**.
* ``paper`` — the Diff-ST paper's protocol: per patch and gene, ``log1p`` counts min-max scaled to
  [0, 1] over the patch, the **absolute** Pearson correlation (and SSIM with data range 1) per
  patch, averaged over patches. It is reported for comparison with published numbers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

__all__ = [
    "MetricSummary",
    "NoiseCeiling",
    "detail_pcc_per_gene",
    "lr_cell_index",
    "masked_values",
    "mass_ratio_per_gene",
    "minmax_scale",
    "paper_protocol",
    "pearson_per_gene",
    "pool_sum",
    "rmse_per_gene",
    "spearman_per_gene",
    "split_half_ceiling",
    "spot_consistency",
    "ssim_per_gene",
    "summarise",
    "within_cell_deviation",
]


@dataclass(frozen=True)
class MetricSummary:
    """Summary of one metric over genes.

    Attributes
    ----------
    mean, median
        Over the genes where the metric is defined (NaN when none is).
    n_defined, n_nan
        Number of genes with a defined value and with NaN (e.g. constant genes for PCC).
    """

    mean: float
    median: float
    n_defined: int
    n_nan: int


def summarise(values: np.ndarray) -> MetricSummary:
    """Mean and median over the defined entries of ``values [G]`` plus the NaN count."""
    v = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(v)
    if not ok.any():
        return MetricSummary(float("nan"), float("nan"), 0, int(v.size))
    return MetricSummary(
        float(v[ok].mean()), float(np.median(v[ok])), int(ok.sum()), int((~ok).sum())
    )


def _check(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must both be [G, H, W]")
    if mask is None:
        return np.ones(truth.shape[1:], dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != truth.shape[1:]:
        raise ValueError(f"mask {m.shape} does not match the map grid {truth.shape[1:]}")
    return m


def masked_values(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values of ``x [G, H, W]`` inside ``mask [H, W]`` → ``[G, n_in_mask]`` float64."""
    return np.asarray(x, dtype=np.float64)[:, np.asarray(mask, dtype=bool)]


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per row of ``a, b [G, n]``; NaN where either row is constant."""
    if a.shape[1] < 2:
        return np.full(a.shape[0], np.nan)
    defined = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    out = np.full(a.shape[0], np.nan)
    num = (a[defined] * b[defined]).sum(axis=1)
    den = np.sqrt((a[defined] ** 2).sum(axis=1) * (b[defined] ** 2).sum(axis=1))
    out[defined] = np.clip(num / den, -1.0, 1.0)
    return out


def pearson_per_gene(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Signed Pearson correlation per gene over the bins in ``mask``.

    Parameters
    ----------
    pred, truth
        ``[G, H, W]`` maps on the same grid (any scale).
    mask
        ``[H, W]`` bool, bins to use (default: all).

    Returns
    -------
    ``[G]`` float64; NaN where the truth or the prediction is constant on the mask.
    """
    m = _check(pred, truth, mask)
    return _rowwise_pearson(masked_values(pred, m), masked_values(truth, m))


def spearman_per_gene(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Spearman rank correlation per gene (average ranks for ties) → ``[G]``, NaN if constant."""
    m = _check(pred, truth, mask)
    a = rankdata(masked_values(pred, m), axis=1)
    b = rankdata(masked_values(truth, m), axis=1)
    return _rowwise_pearson(a, b)


def rmse_per_gene(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Root-mean-square error per gene over the mask → ``[G]`` (units of the maps)."""
    m = _check(pred, truth, mask)
    d = masked_values(pred, m) - masked_values(truth, m)
    if d.shape[1] == 0:
        return np.full(d.shape[0], np.nan)
    return np.sqrt((d * d).mean(axis=1))


def mass_ratio_per_gene(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Predicted over measured total counts per gene on the mask → ``[G]`` (1 = no bias).

    NaN where the gene has no measured counts on the mask.
    """
    m = _check(pred, truth, mask)
    p, t = masked_values(pred, m).sum(axis=1), masked_values(truth, m).sum(axis=1)
    out = np.full(len(t), np.nan)
    np.divide(p, t, out=out, where=t > 0)
    return out


def _ssim_window(shape: tuple[int, int], window: int) -> int | None:
    side = min(window, *shape)
    side -= 1 - side % 2
    return side if side >= 3 else None


def ssim_per_gene(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    data_range: np.ndarray | float | None = None,
    window: int = 7,
) -> np.ndarray:
    """Structural similarity per gene, averaged over the SSIM map inside the mask.

    Both maps are set to 0 outside the mask (so background does not count as structure), the
    full SSIM map is computed with :func:`skimage.metrics.structural_similarity` and averaged
    over the mask bins.

    Parameters
    ----------
    pred, truth
        ``[G, H, W]``.
    mask
        ``[H, W]`` bool.
    data_range
        Dynamic range per gene ``[G]`` or one number. Default: the truth's range on the mask
        (``max − min``) per gene — the range of the *reference* image, as SSIM's constants
        ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²`` require. Genes with zero range give NaN.
    window
        Side of the square window in bins (odd; reduced for small maps).

    Returns
    -------
    ``[G]`` float64 in [-1, 1].
    """
    m = _check(pred, truth, mask)
    n_genes = truth.shape[0]
    if data_range is None:
        t = masked_values(truth, m)
        ranges = np.ptp(t, axis=1) if t.shape[1] else np.zeros(n_genes)
    else:
        ranges = np.broadcast_to(np.asarray(data_range, dtype=np.float64), (n_genes,))
    win = _ssim_window(truth.shape[1:], window)
    out = np.full(n_genes, np.nan)
    if win is None or not m.any():
        return out
    for g in range(n_genes):
        if not ranges[g] > 0:
            continue
        a = np.where(m, np.asarray(pred[g], dtype=np.float64), 0.0)
        b = np.where(m, np.asarray(truth[g], dtype=np.float64), 0.0)
        _, smap = structural_similarity(b, a, data_range=float(ranges[g]), win_size=win, full=True)
        out[g] = float(smap[m].mean())
    return out


def minmax_scale(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-gene min-max scaling of ``x [G, H, W]`` to [0, 1] over ``mask``; NaN for zero range."""
    v = masked_values(x, mask)
    if v.shape[1] == 0:
        return np.full(x.shape, np.nan)
    lo = v.min(axis=1)[:, None, None]
    span = (v.max(axis=1) - v.min(axis=1))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (np.asarray(x, dtype=np.float64) - lo) / span, np.nan)


def paper_protocol(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, *, window: int = 7
) -> dict[str, np.ndarray]:
    """The Diff-ST paper's protocol on patches: min-max per patch, |PCC| and SSIM averaged.

    Parameters
    ----------
    pred, truth
        ``[N, G, P, P]`` counts per HR bin, one entry per patch.
    mask
        ``[N, P, P]`` bool tissue mask per patch.

    Returns
    -------
    ``{"pcc": [G], "ssim": [G], "n_patches": [G]}``: the mean over patches of ``|PCC|`` and of
    SSIM (data range 1) between ``log1p`` counts min-max scaled per patch and gene, and the number
    of patches where the gene is defined (non-constant in both maps). Genes defined in no patch
    are NaN.
    """
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must be [N, G, P, P]")
    n, n_genes = truth.shape[:2]
    pcc = np.full((n, n_genes), np.nan)
    ssim = np.full((n, n_genes), np.nan)
    for i in range(n):
        m = np.asarray(mask[i], dtype=bool)
        if m.sum() < 2:
            continue
        a = minmax_scale(np.log1p(np.maximum(pred[i], 0.0)), m)
        b = minmax_scale(np.log1p(np.maximum(truth[i], 0.0)), m)
        both = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
        if not both.any():
            continue
        pcc[i, both] = np.abs(pearson_per_gene(a[both], b[both], m))
        ssim[i, both] = ssim_per_gene(a[both], b[both], m, data_range=1.0, window=window)
    counts = np.isfinite(pcc).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean_pcc = np.where(counts > 0, np.nansum(pcc, axis=0) / np.maximum(counts, 1), np.nan)
        n_ssim = np.isfinite(ssim).sum(axis=0)
        mean_ssim = np.where(n_ssim > 0, np.nansum(ssim, axis=0) / np.maximum(n_ssim, 1), np.nan)
    return {"pcc": mean_pcc, "ssim": mean_ssim, "n_patches": counts.astype(np.int64)}


def pool_sum(x: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``x [G, H, W]`` over ``factor × factor`` blocks → ``[G, ceil(H/f), ceil(W/f)]``.

    Partial blocks at the bottom/right edges sum what exists (the store's ``pool_grid`` rule).
    """
    if factor < 1:
        raise ValueError(f"factor must be ≥ 1, got {factor}")
    g, h, w = x.shape
    hh, ww = -(-h // factor), -(-w // factor)
    padded = np.zeros((g, hh * factor, ww * factor), dtype=np.float64)
    padded[:, :h, :w] = x
    return padded.reshape(g, hh, factor, ww, factor).sum(axis=(2, 4))


def spot_consistency(
    pred: np.ndarray,
    lr: np.ndarray,
    factor: int,
    lr_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Correlation per gene between the re-aggregated prediction and the LR input.

    Parameters
    ----------
    pred
        ``[G, H, W]`` predicted counts per HR bin.
    lr
        ``[G, h, w]`` LR counts per LR cell (sums over ``factor × factor`` HR bins).
    factor
        HR bins per LR cell side.
    lr_mask
        ``[h, w]`` bool, LR cells holding a measurement (default: all).

    Returns
    -------
    ``[G]`` Pearson correlation of ``pool_sum(pred, factor)`` with ``lr`` over the LR mask.
    """
    pooled = pool_sum(np.asarray(pred, dtype=np.float64), factor)
    if pooled.shape != lr.shape:
        raise ValueError(
            f"pooled prediction {pooled.shape} does not match the LR map {lr.shape} "
            f"(factor {factor})"
        )
    return pearson_per_gene(pooled, np.asarray(lr, dtype=np.float64), lr_mask)


# ------------------------------------------------------------- detail below the LR cell
def lr_cell_index(shape_hr: tuple[int, int], factor: int) -> np.ndarray:
    """``[H, W]`` int64 index of the LR cell holding each HR bin, row-major over the
    ``ceil(H/f) × ceil(W/f)`` cells of a map whose top-left bin starts an LR cell."""
    h, w = shape_hr
    if factor < 1:
        raise ValueError(f"factor must be ≥ 1, got {factor}")
    rows, cols = np.arange(h) // factor, np.arange(w) // factor
    return rows[:, None] * (-(-w // factor)) + cols[None, :]


def within_cell_deviation(x: np.ndarray, cells: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each bin's value minus the mean of its LR cell over the masked bins of that cell.

    Parameters
    ----------
    x
        ``[G, H, W]``.
    cells
        ``[H, W]`` LR cell index of each bin (:func:`lr_cell_index`).
    mask
        ``[H, W]`` bool; only these bins count, in the means and in the output.

    Returns
    -------
    ``[G, n_mask]`` float64 deviations of the masked bins (row-major order). A cell with one
    masked bin has deviation 0 there.
    """
    m = np.asarray(mask, dtype=bool)
    values = masked_values(x, m)
    ids = np.asarray(cells)[m]
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    out = np.empty_like(values)
    for g in range(values.shape[0]):
        sums = np.bincount(inverse, weights=values[g], minlength=len(counts))
        out[g] = values[g] - (sums / counts)[inverse]
    return out


def detail_pcc_per_gene(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """*Detail PCC*: Pearson correlation of the within-LR-cell deviations of prediction and truth.

    A bin's deviation is its value minus the mean of its LR cell (over the masked bins of that
    cell). The score isolates what a method puts *below* the LR cell: a prediction that is
    constant within every cell (nearest upsampling) has no deviations and scores **0** by
    definition; NaN only where the truth has no within-cell variation on the mask.

    Returns ``[G]`` float64.
    """
    m = _check(pred, truth, mask)
    a = within_cell_deviation(pred, cells, m)
    b = within_cell_deviation(truth, cells, m)
    out = _rowwise_pearson(a, b)
    if a.shape[1] == 0:
        return out
    scale = np.abs(masked_values(pred, m)).max(axis=1)
    flat = np.abs(a).max(axis=1) <= 1e-9 * np.maximum(scale, 1e-30)  # no within-cell detail
    out[flat & (np.ptp(b, axis=1) > 0)] = 0.0
    return out


@dataclass(frozen=True)
class NoiseCeiling:
    """Split-half noise ceilings per gene (see :func:`split_half_ceiling`).

    Attributes
    ----------
    total, detail
        ``[G]`` the highest total PCC / detail PCC a perfect predictor of the expected counts
        would reach against this truth: ``sqrt(2r / (1 + r))`` of the split-half correlation ``r``.
    half_total, half_detail
        ``[G]`` the raw split-half correlations ``r`` (mean over the random splits).
    n_splits
        Random splits averaged.
    """

    total: np.ndarray
    detail: np.ndarray
    half_total: np.ndarray
    half_detail: np.ndarray
    n_splits: int


def _spearman_brown_ceiling(r: np.ndarray) -> np.ndarray:
    full = np.where(r > 0, 2.0 * r / (1.0 + r), 0.0)  # reliability of the full-depth map
    return np.where(np.isfinite(r), np.sqrt(np.clip(full, 0.0, 1.0)), np.nan)


def split_half_ceiling(
    truth: np.ndarray,
    mask: np.ndarray,
    cells: np.ndarray,
    *,
    n_splits: int = 8,
    seed: int = 0,
) -> NoiseCeiling:
    """Noise ceilings of total and detail PCC from random halves of the measured molecules.

    Each molecule goes to half A or half B with probability ½ (binomial thinning of every bin's
    count, which is exactly a random split of its molecules); the correlation ``r`` of the halves
    over the masked bins measures how reproducible the map is at half depth. Spearman–Brown
    gives the reliability at full depth, ``R = 2r / (1 + r)`` (the expected correlation of two
    independent full-depth measurements), and a perfect predictor of the expected counts
    correlates with one measurement at ``sqrt(R)``: that is the ceiling reported. The same is
    done for the within-LR-cell deviations (detail). Results are the mean of ``r`` over
    ``n_splits`` seeded splits.

    Parameters
    ----------
    truth
        ``[G, H, W]`` measured counts (integers).
    mask, cells
        As for :func:`detail_pcc_per_gene`.

    Raises
    ------
    ValueError
        When ``truth`` does not hold non-negative integer counts.
    """
    m = _check(truth, truth, mask)
    counts = masked_values(truth, m)
    if counts.size and (counts.min() < 0 or not np.allclose(counts, np.rint(counts))):
        raise ValueError("split-half ceilings need non-negative integer counts as the truth")
    n = np.rint(counts).astype(np.int64)
    rng = np.random.default_rng(seed)
    r_total = np.zeros(truth.shape[0])
    r_detail = np.zeros(truth.shape[0])
    h, w = truth.shape[1:]
    for _ in range(n_splits):
        a = rng.binomial(n, 0.5)
        b = n - a
        r_total += _rowwise_pearson(a.astype(np.float64), b.astype(np.float64))
        grid_a = np.zeros((truth.shape[0], h, w))
        grid_b = np.zeros((truth.shape[0], h, w))
        grid_a[:, m], grid_b[:, m] = a, b
        r_detail += _rowwise_pearson(
            within_cell_deviation(grid_a, cells, m), within_cell_deviation(grid_b, cells, m)
        )
    r_total /= n_splits
    r_detail /= n_splits
    return NoiseCeiling(
        _spearman_brown_ceiling(r_total),
        _spearman_brown_ceiling(r_detail),
        r_total,
        r_detail,
        n_splits,
    )
