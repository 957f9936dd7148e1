"""Score one method's predictions on a set of truth patches (all metrics, one table per gene).

The unit of evaluation is a :class:`PatchSet`: the measured HR patches of a held-out region
with their LR input and tissue masks. Every method (diffst, regression, interpolation
baselines, ablations) gives a :class:`MethodPrediction` on the same patches, so all methods are
scored on exactly the same bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffst.evaluate import calibration as cal
from diffst.evaluate import metrics as met
from diffst.evaluate.config import EvaluateConfig

__all__ = ["MethodPrediction", "MethodScores", "PatchSet", "score_method", "stitch"]


@dataclass(frozen=True)
class PatchSet:
    """Measured truth on ``N`` square patches of one section.

    Attributes
    ----------
    hr
        ``[N, G, P, P]`` measured counts per HR bin.
    lr
        ``[N, G, p, p]`` LR counts per LR cell (sum over ``factor × factor`` HR bins).
    mask, lr_mask
        ``[N, P, P]`` / ``[N, p, p]`` bool: bins inside tissue / LR cells holding a measurement.
    origin_bins
        ``[N, 2]`` int ``(row, col)`` of each patch's top-left bin in the section grid.
    genes
        ``G`` gene names.
    factor
        HR bins per LR cell side.
    """

    hr: np.ndarray
    lr: np.ndarray
    mask: np.ndarray
    lr_mask: np.ndarray
    origin_bins: np.ndarray
    genes: tuple[str, ...]
    factor: int

    def __post_init__(self) -> None:
        n, g, p, _ = self.hr.shape
        if self.lr.shape[:2] != (n, g) or self.mask.shape != (n, p, p):
            raise ValueError(
                f"patch arrays disagree: hr {self.hr.shape}, lr {self.lr.shape}, "
                f"mask {self.mask.shape}"
            )
        if len(self.genes) != g:
            raise ValueError(f"{len(self.genes)} gene names for {g} genes")


@dataclass(frozen=True)
class MethodPrediction:
    """One method's prediction on the patches of a :class:`PatchSet` (counts per HR bin).

    ``mean`` is ``[N, G, P, P]``; ``std``, ``q05``, ``q95`` likewise when the method has
    uncertainty; ``samples`` ``[N, K, G, P, P]`` when individual samples were kept.
    ``unavailable`` holds the reason when the method could not run (then ``mean`` is None).
    """

    name: str
    mean: np.ndarray | None
    std: np.ndarray | None = None
    q05: np.ndarray | None = None
    q95: np.ndarray | None = None
    samples: np.ndarray | None = None
    description: str = ""
    unavailable: str | None = None


@dataclass
class MethodScores:
    """Scores of one method: a per-gene table and the calibration curve."""

    name: str
    genes: pd.DataFrame
    calibration: np.ndarray | None = None
    calibration_source: str = ""
    description: str = ""
    unavailable: str | None = None


def stitch(
    patches: np.ndarray, origin_bins: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Average overlapping patches into one map of their bounding box.

    Parameters
    ----------
    patches
        ``[N, G, P, P]``.
    origin_bins
        ``[N, 2]`` (row, col) of each patch in the section grid.
    mask
        ``[N, P, P]`` bool; the union is returned.

    Returns
    -------
    (region ``[G, H, W]``, region mask ``[H, W]`` bool, ``(row0, col0)`` of the box).
    """
    n, g, p, _ = patches.shape
    r0, c0 = origin_bins.min(axis=0)
    h, w = origin_bins[:, 0].max() - r0 + p, origin_bins[:, 1].max() - c0 + p
    total = np.zeros((g, h, w))
    weight = np.zeros((h, w))
    union = np.zeros((h, w), dtype=bool)
    for i in range(n):
        r, c = origin_bins[i, 0] - r0, origin_bins[i, 1] - c0
        total[:, r : r + p, c : c + p] += patches[i]
        weight[r : r + p, c : c + p] += 1
        union[r : r + p, c : c + p] |= True if mask is None else mask[i].astype(bool)
    with np.errstate(invalid="ignore"):
        region = total / np.maximum(weight, 1)
    return region, union & (weight > 0), (int(r0), int(c0))


def _per_patch_pcc(pred: np.ndarray, truth: PatchSet) -> np.ndarray:
    values = np.stack(
        [met.pearson_per_gene(pred[i], truth.hr[i], truth.mask[i]) for i in range(len(pred))]
    )
    n = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), np.nan)


def _spot_consistency(pred: np.ndarray, truth: PatchSet) -> np.ndarray:
    pooled = np.stack([met.pool_sum(p, truth.factor) for p in pred])  # [N, G, p, p]
    keep = truth.lr_mask.astype(bool)
    a = pooled.transpose(1, 0, 2, 3)[:, keep][:, None, :]
    b = truth.lr.transpose(1, 0, 2, 3)[:, keep][:, None, :]
    return met.pearson_per_gene(a, b)


def _uncertainty_columns(
    pred: MethodPrediction, truth: PatchSet, cfg: EvaluateConfig
) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    cols: dict[str, np.ndarray] = {}
    curve, source = None, ""
    if pred.std is None or pred.mean is None:
        return cols, curve, source
    hr, origin, m = truth.hr, truth.origin_bins, truth.mask
    region_truth, region_mask, _ = stitch(hr, origin, m)
    region = {k: stitch(v, origin, m)[0] for k, v in (("mean", pred.mean), ("std", pred.std))}
    n, g, p, _ = hr.shape
    flat_truth = hr.transpose(1, 0, 2, 3).reshape(g, n * p, p)
    flat_mask = m.reshape(n * p, p).astype(bool)
    if pred.q05 is not None and pred.q95 is not None:
        # per patch, not stitched: the average of overlapping patches' quantiles is no quantile
        lo, hi = (q.transpose(1, 0, 2, 3).reshape(g, n * p, p) for q in (pred.q05, pred.q95))
        cols["coverage90"] = cal.interval_coverage(lo, hi, flat_truth, flat_mask)
    cols["std_err_corr"] = cal.std_error_correlation(
        region["std"], region["mean"], region_truth, region_mask
    )
    if pred.samples is not None and pred.samples.shape[1] >= 2:
        # patches stacked along rows: samples [K, G, N·P, P], truth [G, N·P, P]
        k = pred.samples.shape[1]
        samples = pred.samples.transpose(1, 2, 0, 3, 4).reshape(k, g, n * p, p)
        cols["crps"] = cal.crps_from_samples(samples, flat_truth, flat_mask)
        cols["diversity"] = cal.sample_diversity(samples, flat_mask)
        curve = cal.coverage_curve(samples, flat_truth, flat_mask, cfg.calibration_levels)
        source = f"{k} samples per patch"
    else:
        curve = cal.coverage_curve_gaussian(
            region["mean"], region["std"], region_truth, region_mask, cfg.calibration_levels
        )
        source = "Gaussian intervals mean ± z·std (samples not stored)"
    return cols, curve, source


def score_method(pred: MethodPrediction, truth: PatchSet, cfg: EvaluateConfig) -> MethodScores:
    """All metrics of one method, per gene.

    Columns of ``MethodScores.genes`` (one row per gene):
    ``pcc``, ``spearman``, ``ssim``, ``rmse``, ``mass_ratio`` (counts protocol over the stitched
    region),
    ``pcc_patch`` (signed PCC per patch, averaged), ``pcc_paper``, ``ssim_paper`` (paper
    protocol), ``spot_consistency``, and with uncertainty ``coverage90``, ``std_err_corr``,
    ``crps``, ``diversity``.
    """
    if pred.unavailable is not None or pred.mean is None:
        return MethodScores(
            pred.name,
            pd.DataFrame(index=list(truth.genes)),
            description=pred.description,
            unavailable=pred.unavailable or "no prediction",
        )
    if pred.mean.shape != truth.hr.shape:
        raise ValueError(
            f"{pred.name}: prediction {pred.mean.shape} does not match the truth patches "
            f"{truth.hr.shape}"
        )
    region_pred, region_mask, _ = stitch(pred.mean, truth.origin_bins, truth.mask)
    region_truth, _, _ = stitch(truth.hr, truth.origin_bins, truth.mask)
    paper = met.paper_protocol(pred.mean, truth.hr, truth.mask, window=cfg.ssim_window)
    cols = {
        "pcc": met.pearson_per_gene(region_pred, region_truth, region_mask),
        "spearman": met.spearman_per_gene(region_pred, region_truth, region_mask),
        "ssim": met.ssim_per_gene(region_pred, region_truth, region_mask, window=cfg.ssim_window),
        "rmse": met.rmse_per_gene(region_pred, region_truth, region_mask),
        "mass_ratio": met.mass_ratio_per_gene(region_pred, region_truth, region_mask),
        "pcc_patch": _per_patch_pcc(pred.mean, truth),
        "pcc_paper": paper["pcc"],
        "ssim_paper": paper["ssim"],
        "spot_consistency": _spot_consistency(pred.mean, truth),
    }
    extra, curve, source = _uncertainty_columns(pred, truth, cfg)
    cols.update(extra)
    table = pd.DataFrame(cols, index=pd.Index(list(truth.genes), name="gene"))
    return MethodScores(pred.name, table, curve, source, pred.description)
