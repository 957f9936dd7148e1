"""Predicted HR bins ↔ measured spots: re-aggregation, consistency and total-preserving
projection (the spots and LR cells of :class:`~diffst.sections.inputs.SectionInputs`).

A bin belongs to a spot when the bin's centre lies inside the spot (circle of the spot diameter,
or square of that side). A bin inside several spots is given to the nearest spot centre, so every
bin belongs to at most one spot and the projection below conserves each spot's total exactly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from diffst.inference.uncertainty import Stat

if TYPE_CHECKING:
    from diffst.sections.inputs import SectionInputs

_log = logging.getLogger("diffst.inference")

__all__ = [
    "aggregate_to_spots",
    "assign_bins_to_spots",
    "project_mean",
    "project_to_spots",
    "spot_consistency",
    "spot_membership",
    "spot_projection",
    "spot_report",
]


def assign_bins_to_spots(
    centres_um: np.ndarray,
    diameter_um: float,
    shape: Literal["circle", "square"],
    origin_um: tuple[float, float],
    hr_um: float,
    shape_hr: tuple[int, int],
    bin_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Spot index of every HR bin.

    Parameters
    ----------
    centres_um
        ``[n, 2]`` spot centres ``(x, y)`` in µm.
    diameter_um
        Spot diameter (circle) or side (square), µm.
    shape
        ``"circle"`` or ``"square"``.
    origin_um, hr_um, shape_hr
        Section grid: top-left corner ``(x0, y0)`` µm, bin side µm, ``(H, W)`` bins.
    bin_mask
        Optional ``[H, W]`` bool; bins outside it are never assigned.

    Returns
    -------
    np.ndarray
        ``[H, W]`` int64, spot index of each bin or ``-1`` for bins in no spot.
    """
    h, w = shape_hr
    x0, y0 = origin_um
    radius = 0.5 * float(diameter_um)
    best = np.full((h, w), np.inf)
    spot_of_bin = np.full((h, w), -1, dtype=np.int64)
    for s, (cx, cy) in enumerate(np.asarray(centres_um, dtype=np.float64)):
        j0 = max(int(np.floor((cx - radius - x0) / hr_um)), 0)
        j1 = min(int(np.ceil((cx + radius - x0) / hr_um)) + 1, w)
        i0 = max(int(np.floor((cy - radius - y0) / hr_um)), 0)
        i1 = min(int(np.ceil((cy + radius - y0) / hr_um)) + 1, h)
        if i0 >= i1 or j0 >= j1:
            continue
        dx = x0 + (np.arange(j0, j1) + 0.5) * hr_um - cx
        dy = y0 + (np.arange(i0, i1) + 0.5) * hr_um - cy
        dist = np.hypot(dy[:, None], dx[None, :])
        if shape == "circle":
            inside = dist <= radius
        else:
            inside = (np.abs(dy)[:, None] <= radius) & (np.abs(dx)[None, :] <= radius)
        closer = inside & (dist < best[i0:i1, j0:j1])
        best[i0:i1, j0:j1][closer] = dist[closer]
        spot_of_bin[i0:i1, j0:j1][closer] = s
    if bin_mask is not None:
        spot_of_bin[~np.asarray(bin_mask, dtype=bool)] = -1
    return spot_of_bin


def spot_membership(spot_of_bin: np.ndarray, n_spots: int) -> sp.csr_matrix:
    """Sparse ``[n_spots, H·W]`` 0/1 matrix: row ``s`` marks the (row-major) bins of spot ``s``."""
    flat = spot_of_bin.ravel()
    bins = np.flatnonzero(flat >= 0)
    data = np.ones(bins.size, dtype=np.float64)
    return sp.csr_matrix((data, (flat[bins], bins)), shape=(n_spots, flat.size))


def aggregate_to_spots(values: np.ndarray, membership: sp.csr_matrix) -> np.ndarray:
    """Sum bins into spots.

    Parameters
    ----------
    values
        ``[G, H, W]`` per-bin values (counts per bin). Bins in no spot may hold NaN.
    membership
        From :func:`spot_membership`.

    Returns
    -------
    np.ndarray
        ``[n_spots, G]`` float64 sums; spots that contain no bin get 0.
    """
    g = values.shape[0]
    flat = np.asarray(values, dtype=np.float64).reshape(g, -1)
    return np.asarray(membership @ flat.T)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spot_consistency(
    predicted: np.ndarray,
    measured: np.ndarray,
    genes: tuple[str, ...] | list[str],
    bins_per_spot: np.ndarray,
) -> dict[str, object]:
    """Agreement of re-aggregated predictions with the measured spot counts.

    Parameters
    ----------
    predicted, measured
        ``[n_spots, G]`` predicted spot sums and measured counts.
    genes
        Gene names, length ``G``.
    bins_per_spot
        ``[n_spots]`` number of predicted bins in each spot; spots without bins are ignored.

    Returns
    -------
    dict
        ``pcc`` (gene → Pearson r across spots, NaN for genes constant over spots), ``mean_pcc``,
        ``median_pcc`` (over genes with a defined r), ``n_spots`` (spots used), ``n_spots_empty``
        (spots with no predicted bin), ``total_ratio`` (Σ predicted / Σ measured over used spots).
    """
    used = np.asarray(bins_per_spot) > 0
    p, m = predicted[used], measured[used]
    pcc = (
        {str(gene): _pearson(p[:, k], m[:, k]) for k, gene in enumerate(genes)}
        if used.sum() > 1
        else {}
    )
    finite = np.array([v for v in pcc.values() if np.isfinite(v)])
    total_m = float(m.sum())
    return {
        "pcc": pcc,
        "mean_pcc": float(finite.mean()) if finite.size else float("nan"),
        "median_pcc": float(np.median(finite)) if finite.size else float("nan"),
        "n_spots": int(used.sum()),
        "n_spots_empty": int((~used).sum()),
        "total_ratio": float(p.sum() / total_m) if total_m > 0 else float("nan"),
    }


def spot_projection(
    mean: np.ndarray, spot_of_bin: np.ndarray, measured: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``(scale, shift)`` ``[G, H, W]`` that give each spot its measured total per gene.

    For spot ``s`` and gene ``g`` with predicted total ``P > 0`` over its bins the spot's bins get
    ``scale = M / P`` (``M`` measured) and shift 0; where ``P = 0`` the measured count is spread
    evenly (``scale = 1``, ``shift = M / n_bins``). Bins belonging to no spot keep scale 1, shift 0,
    so ``mean·scale + shift`` is the projected mean.

    Parameters
    ----------
    mean
        ``[G, H, W]`` non-negative point prediction.
    spot_of_bin
        ``[H, W]`` spot index of each bin, −1 for none (:func:`assign_bins_to_spots`).
    measured
        ``[n_spots, G]`` measured counts.
    """
    n_spots, n_genes = measured.shape
    flat_spot = spot_of_bin.ravel()
    bins = np.flatnonzero(flat_spot >= 0)
    owner = flat_spot[bins]
    n_bins = np.bincount(owner, minlength=n_spots).astype(np.float64)
    flat = mean.reshape(n_genes, -1)
    scale = np.ones(flat.shape, dtype=np.float64)
    shift = np.zeros(flat.shape, dtype=np.float64)
    for g in range(n_genes):
        total = np.bincount(owner, weights=flat[g, bins].astype(np.float64), minlength=n_spots)
        target = np.asarray(measured[:, g], dtype=np.float64)
        has_total = total > 0
        factor = np.where(has_total, target / np.where(has_total, total, 1.0), 1.0)
        even = np.where(has_total, 0.0, target / np.maximum(n_bins, 1.0))
        scale[g, bins] = factor[owner]
        shift[g, bins] = even[owner]
    return scale.reshape(mean.shape), shift.reshape(mean.shape)


def project_to_spots(
    stats: np.ndarray, spot_of_bin: np.ndarray, measured: np.ndarray
) -> np.ndarray:
    """Rescale bins so that each spot's predicted total per gene equals its measurement.

    Every statistic of a spot's bins is moved by :func:`spot_projection` of the mean: multiplied
    by ``M / P`` where the spot's predicted total ``P`` is positive; where ``P = 0`` but ``M > 0``
    the mean is set to ``M / n_bins`` uniformly and the quantiles and the samples' mean are
    shifted by the same amount (std unchanged). Bins belonging to no spot are left untouched.

    Parameters
    ----------
    stats
        ``[5, G, H, W]`` statistics (axis 0 ordered as :class:`~diffst.inference.uncertainty.Stat`;
        the scale comes from ``MEAN`` and is applied to every other statistic).
    spot_of_bin
        ``[H, W]`` from :func:`assign_bins_to_spots`.
    measured
        ``[n_spots, G]`` measured counts.

    Returns
    -------
    np.ndarray
        Projected copy of ``stats`` (same dtype).
    """
    out = stats.copy()
    scale, shift = spot_projection(stats[Stat.MEAN], spot_of_bin, measured)
    for stat in (Stat.MEAN, Stat.Q05, Stat.Q95, Stat.SAMPLE_MEAN):
        out[stat] = stats[stat].astype(np.float64) * scale + shift
    out[Stat.STD] = stats[Stat.STD].astype(np.float64) * scale
    return out


def spot_report(
    stats: np.ndarray, tissue: np.ndarray, inputs: SectionInputs, genes: list[str], project: bool,
    measured: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Consistency of ``stats [5, G, H, W]`` with the measured spots, and the projection onto them
    when ``project`` (bins restricted to ``tissue [H, W]``); returns the (projected) statistics
    and the report of :func:`spot_consistency` plus ``projected``.

    ``measured`` (``[G]`` bool) marks the genes the section measures; the others (imputed LR,
    no spot counts) are neither scored nor projected.
    """
    geo = inputs.geometry
    centres, counts = inputs.spots
    spot_of_bin = assign_bins_to_spots(
        centres,
        inputs.spot_diameter_um,
        inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um,
        geo.hr_um,
        geo.shape_hr,
        bin_mask=tissue,
    )
    n = len(centres)
    member = spot_membership(spot_of_bin, n)
    bins_per_spot = np.bincount(spot_of_bin[spot_of_bin >= 0], minlength=n)
    keep = np.ones(len(genes), dtype=bool) if measured is None else np.asarray(measured, bool)
    agg = aggregate_to_spots(stats[Stat.MEAN][keep], member)
    names = [g for g, k in zip(genes, keep, strict=True) if k]
    report = spot_consistency(agg, counts[:, keep], names, bins_per_spot)
    report["projected"] = project
    if project:
        projected = project_to_spots(stats[:, keep], spot_of_bin, counts[:, keep])
        if keep.all():
            stats = projected
        else:
            stats = stats.copy()
            stats[:, keep] = projected
    return stats, report


def project_mean(mean: np.ndarray, tissue: np.ndarray, inputs: SectionInputs) -> np.ndarray:
    """A point estimate ``[G, H, W]`` rescaled so each measured spot (LR cell) re-aggregates to
    its measured counts (bins in ``tissue`` only; bins in no spot unchanged)."""
    geo = inputs.geometry
    centres, counts = inputs.spots
    spot_of_bin = assign_bins_to_spots(
        centres, inputs.spot_diameter_um, inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um, geo.hr_um, geo.shape_hr, bin_mask=tissue,
    )  # fmt: skip
    stats = np.zeros((len(Stat), *mean.shape), dtype=np.float32)
    stats[Stat.MEAN] = np.nan_to_num(mean)
    return project_to_spots(stats, spot_of_bin, counts)[Stat.MEAN]
