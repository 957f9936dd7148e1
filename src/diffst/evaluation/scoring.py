"""Score one method's prediction on a held-out :class:`~diffst.evaluation.region.Region`.

Every method (diffst, regression, interpolation baselines, ablations, peers) gives a
:class:`MethodPrediction`: maps of the region's bounding box, made from the section's one LR grid.
:func:`score_method` computes every metric per gene on the region's scored bins — each bin once —
so all methods are judged on exactly the same bins. :func:`score_all` adds the split-half noise
ceilings, computed once per region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from diffst import metrics as met
from diffst.evaluation import calibration as cal
from diffst.evaluation.config import EvaluateConfig
from diffst.evaluation.region import PatchSet, Region

__all__ = [
    "MethodPrediction",
    "MethodScores",
    "PatchSet",
    "Region",
    "noise_ceiling",
    "project_prediction",
    "score_all",
    "score_method",
]


@dataclass(frozen=True)
class MethodPrediction:
    """One method's prediction of a region's bounding box (counts per HR unit).

    Attributes
    ----------
    mean
        ``[G, H, W]`` point prediction (``None`` when the method is unavailable).
    std, q05, q95
        ``[G, H, W]`` spread and the raw 5 %/95 % quantiles of its samples, each bin's from one
        tile or patch (the one where it is most central), when the method has uncertainty.
    samples
        ``[K, G, H, W]`` the samples themselves, when kept (CRPS, calibration curve).
    n_samples
        K, the samples behind ``std``/``q05``/``q95`` (for the coverage K samples can reach).
    calibration
        Conformal widening of the intervals fitted on the validation split
        (:class:`~diffst.evaluation.calibration.ConformalCalibration`), when available.
    unavailable
        The reason when the method could not run.
    """

    name: str
    mean: np.ndarray | None
    std: np.ndarray | None = None
    q05: np.ndarray | None = None
    q95: np.ndarray | None = None
    samples: np.ndarray | None = None
    description: str = ""
    unavailable: str | None = None
    n_samples: int | None = None
    calibration: cal.ConformalCalibration | None = None


def project_prediction(
    pred: MethodPrediction, region: Region, name: str | None = None
) -> MethodPrediction:
    """``pred`` with every measured LR cell rescaled to its measured total (as ``diffst predict``
    writes its point prediction by default): the mean, the samples and the quantiles are
    multiplied by the cell's factor (the std too); cells predicted empty get the count spread
    evenly (the quantiles and samples shifted by it). See :meth:`Region.lr_projection`."""
    if pred.mean is None:
        return pred
    scale, shift = region.lr_projection(pred.mean)

    def moved(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else (x * scale + shift).astype(np.float32)

    return replace(
        pred, name=name or pred.name, mean=moved(pred.mean), q05=moved(pred.q05),
        q95=moved(pred.q95), samples=moved(pred.samples),
        std=None if pred.std is None else (pred.std * scale).astype(np.float32),
    )  # fmt: skip


@dataclass
class MethodScores:
    """Scores of one method: a per-gene table and the calibration curve."""

    name: str
    genes: pd.DataFrame
    calibration: np.ndarray | None = None
    calibration_source: str = ""
    description: str = ""
    unavailable: str | None = None
    n_samples: int | None = None


def _tiles(x: np.ndarray, region: Region) -> np.ndarray:
    """``[T, G, P, P]`` non-overlapping tiles of a box map (zero-padded at the edges)."""
    p = region.patch
    padded = np.pad(x, ((0, 0), (0, p), (0, p)))
    return np.stack([padded[:, r : r + p, c : c + p] for r, c in region.tiles()])


def _tile_masks(region: Region) -> np.ndarray:
    p = region.patch
    padded = np.pad(region.scored, ((0, p), (0, p)))
    return np.stack([padded[r : r + p, c : c + p] for r, c in region.tiles()])


def _per_tile_pcc(pred: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> np.ndarray:
    values = np.stack([met.pearson_per_gene(pred[i], truth[i], masks[i]) for i in range(len(pred))])
    n = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), np.nan)


def _spot_consistency(pred: np.ndarray, region: Region) -> np.ndarray:
    """PCC over the LR cells holding scored bins between the prediction summed over each cell
    and the cell's LR input (nearest upsampling re-aggregates to 1 by construction)."""
    f = region.factor
    pooled = met.pool_sum(np.asarray(pred, dtype=np.float64), f)
    cells = (met.pool_sum(region.scored[None].astype(np.float64), f)[0] > 0) & region.lr_mask
    return met.pearson_per_gene(pooled, region.lr.astype(np.float64), cells)


def _uncertainty_columns(
    pred: MethodPrediction, region: Region, cfg: EvaluateConfig
) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    cols: dict[str, np.ndarray] = {}
    if pred.std is None or pred.mean is None:
        return cols, None, ""
    truth, m = region.hr, region.scored
    if pred.q05 is not None and pred.q95 is not None:
        cols["coverage90"] = cal.interval_coverage(pred.q05, pred.q95, truth, m)
        if pred.n_samples:
            expected = cal.expected_sample_coverage(int(pred.n_samples), 0.9)
            cols["coverage90_expected"] = np.full(len(region.genes), expected)
        if pred.calibration is not None:
            lo, hi = pred.calibration.apply(pred.q05, pred.q95, pred.std)
            cols["coverage90_calibrated"] = cal.interval_coverage(lo, hi, truth, m)
    cols["std_err_corr"] = cal.std_error_correlation(pred.std, pred.mean, truth, m)
    if pred.samples is not None and pred.samples.shape[0] >= 2:
        k = pred.samples.shape[0]
        cols["crps"] = cal.crps_from_samples(pred.samples, truth, m)
        cols["diversity"] = cal.sample_diversity(pred.samples, m)
        curve = cal.coverage_curve(pred.samples, truth, m, cfg.calibration_levels)
        return cols, curve, f"{k} samples per bin (from the tile where the bin is most central)"
    curve = cal.coverage_curve_gaussian(pred.mean, pred.std, truth, m, cfg.calibration_levels)
    return cols, curve, "Gaussian intervals mean ± z·std (samples not stored)"


def score_method(
    pred: MethodPrediction,
    region: Region,
    cfg: EvaluateConfig,
    ceiling: met.NoiseCeiling | None = None,
) -> MethodScores:
    """All metrics of one method on the region's scored bins, per gene.

    Columns of ``MethodScores.genes`` (one row per gene): ``pcc``, ``spearman``, ``ssim``,
    ``rmse``, ``mass_ratio`` (count ratio), ``detail_pcc`` (within-LR-cell deviations),
    ``pcc_ceiling`` and ``detail_ceiling`` (split-half noise ceilings of the truth, the same for
    every method), ``detail_recovered`` (detail PCC / detail ceiling), ``pcc_patch`` (signed PCC
    per non-overlapping tile, averaged), ``pcc_paper``, ``ssim_paper`` (the paper's protocol on
    those tiles), ``spot_consistency``; with uncertainty ``coverage90`` (raw 5–95 % sample
    quantiles), ``coverage90_expected`` (what K samples of a calibrated model reach),
    ``coverage90_calibrated`` (conformal intervals), ``std_err_corr``, ``crps``, ``diversity``.
    """
    if pred.unavailable is not None or pred.mean is None:
        return MethodScores(
            pred.name,
            pd.DataFrame(index=list(region.genes)),
            description=pred.description,
            unavailable=pred.unavailable or "no prediction",
        )
    if pred.mean.shape != region.hr.shape:
        raise ValueError(
            f"{pred.name}: prediction {pred.mean.shape} does not match the region {region.hr.shape}"
        )
    truth, m, cells = region.hr, region.scored, region.cells()
    if ceiling is None:
        ceiling = noise_ceiling(region)
    detail = met.detail_pcc_per_gene(pred.mean, truth, m, cells)
    tiles_pred, tiles_truth = _tiles(pred.mean, region), _tiles(truth, region)
    tile_masks = _tile_masks(region)
    paper = met.paper_protocol(tiles_pred, tiles_truth, tile_masks, window=cfg.ssim_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        recovered = np.where(ceiling.detail > 0, detail / ceiling.detail, np.nan)
    cols = {
        "pcc": met.pearson_per_gene(pred.mean, truth, m),
        "spearman": met.spearman_per_gene(pred.mean, truth, m),
        "ssim": met.ssim_per_gene(pred.mean, truth, m, window=cfg.ssim_window),
        "rmse": met.rmse_per_gene(pred.mean, truth, m),
        "mass_ratio": met.mass_ratio_per_gene(pred.mean, truth, m),
        "detail_pcc": detail,
        "detail_recovered": recovered,
        "pcc_ceiling": ceiling.total,
        "detail_ceiling": ceiling.detail,
        "pcc_patch": _per_tile_pcc(tiles_pred, tiles_truth, tile_masks),
        "pcc_paper": paper["pcc"],
        "ssim_paper": paper["ssim"],
        "spot_consistency": _spot_consistency(pred.mean, region),
    }
    extra, curve, source = _uncertainty_columns(pred, region, cfg)
    cols.update(extra)
    table = pd.DataFrame(cols, index=pd.Index(list(region.genes), name="gene"))
    return MethodScores(pred.name, table, curve, source, pred.description, n_samples=pred.n_samples)


def score_all(
    preds: Sequence[MethodPrediction], region: Region, cfg: EvaluateConfig
) -> list[MethodScores]:
    """:func:`score_method` for every prediction, with the noise ceilings computed once."""
    ceiling = noise_ceiling(region)
    return [score_method(p, region, cfg, ceiling) for p in preds]


def noise_ceiling(region: Region) -> met.NoiseCeiling:
    """Split-half ceilings of the region's truth (NaN when it does not hold integer counts)."""
    try:
        return met.split_half_ceiling(region.hr, region.scored, region.cells())
    except ValueError:
        nan = np.full(len(region.genes), np.nan)
        return met.NoiseCeiling(nan, nan, nan, nan, 0)
