"""Uncertainty metrics of a sampled prediction: coverage, CRPS, std–error link, diversity.

A prediction with uncertainty is ``K`` samples ``[K, G, H, W]`` of the HR map (counts per bin)
or their summaries (mean, std, quantiles). All functions work per gene on the tissue mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import norm

from diffst.metrics import masked_values, pearson_per_gene

__all__ = [
    "ConformalCalibration",
    "conformal_calibration",
    "coverage_curve",
    "coverage_curve_gaussian",
    "crps_from_samples",
    "expected_sample_coverage",
    "interval_coverage",
    "sample_diversity",
    "std_error_correlation",
]


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise ValueError(f"mask {m.shape} does not match the map grid {shape}")
    return m


def interval_coverage(
    lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Share of bins whose true value lies in ``[lower, upper]``, per gene.

    Parameters
    ----------
    lower, upper, truth
        ``[G, H, W]`` (e.g. the ``q05`` and ``q95`` layers and the measured counts).
    mask
        ``[H, W]`` bool.

    Returns
    -------
    ``[G]`` in [0, 1] (NaN for an empty mask). A calibrated 90% interval gives ≈ 0.90.
    """
    m = _mask(mask, truth.shape[1:])
    y = masked_values(truth, m)
    if y.shape[1] == 0:
        return np.full(truth.shape[0], np.nan)
    inside = (masked_values(lower, m) <= y) & (y <= masked_values(upper, m))
    return inside.mean(axis=1)


def crps_from_samples(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Continuous ranked probability score from samples, mean over the mask, per gene.

    Energy form ``CRPS(F, y) = E|X − y| − ½ E|X − X'|`` with ``X, X'`` independent draws of the
    forecast; ``E|X − X'|`` is estimated without bias over the ``K(K−1)`` ordered pairs of distinct
    samples, through the sorted samples: ``Σ_{i<j} (x_(j) − x_(i)) = Σ_k (2k − K − 1) x_(k)``.

    Parameters
    ----------
    samples
        ``[K, G, H, W]`` (K ≥ 2) draws of the HR map.
    truth
        ``[G, H, W]``.
    mask
        ``[H, W]`` bool.

    Returns
    -------
    ``[G]`` mean CRPS (units of the maps; lower is better).
    """
    k = samples.shape[0]
    if k < 2 or samples.shape[1:] != truth.shape:
        raise ValueError(
            f"need samples [K≥2, G, H, W] matching truth {truth.shape}, got {samples.shape}"
        )
    m = _mask(mask, truth.shape[1:])
    x = np.sort(np.asarray(samples, dtype=np.float64)[:, :, m], axis=0)  # [K, G, n]
    y = masked_values(truth, m)
    if y.shape[1] == 0:
        return np.full(truth.shape[0], np.nan)
    skill = np.abs(x - y[None]).mean(axis=0)
    weights = (2.0 * np.arange(1, k + 1) - k - 1)[:, None, None]
    spread = 2.0 * (weights * x).sum(axis=0) / (k * (k - 1))
    return (skill - 0.5 * spread).mean(axis=1)


def std_error_correlation(
    std: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Pearson correlation per gene between predicted std and absolute error ``|mean − truth|``.

    Positive values mean the model is less sure where it is more wrong. ``[G]``; NaN where
    either is constant on the mask.
    """
    return pearson_per_gene(std, np.abs(np.asarray(mean) - np.asarray(truth)), mask)


def sample_diversity(samples: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean pairwise distance between samples, per gene.

    Distance between two samples = root-mean-square difference over the mask bins (units of
    the maps). Zero means all samples are identical (mode collapse).

    Parameters
    ----------
    samples
        ``[K, G, H, W]``, K ≥ 2.

    Returns
    -------
    ``[G]`` mean over the ``K(K−1)/2`` pairs.
    """
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"sample diversity needs at least 2 samples, got {k}")
    m = _mask(mask, samples.shape[2:])
    x = np.asarray(samples, dtype=np.float64)[:, :, m]  # [K, G, n]
    total = np.zeros(samples.shape[1])
    for i in range(k - 1):
        d = x[i + 1 :] - x[i][None]
        total += np.sqrt((d * d).mean(axis=2)).sum(axis=0)
    return total / (k * (k - 1) / 2)


def coverage_curve(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None,
    levels: tuple[float, ...] | np.ndarray,
) -> np.ndarray:
    """Empirical coverage of central sample-quantile intervals at each nominal level.

    Parameters
    ----------
    samples
        ``[K, G, H, W]``.
    truth
        ``[G, H, W]``.
    mask
        ``[H, W]`` bool.
    levels
        Nominal central coverages in (0, 1), e.g. ``0.9`` → the 5%–95% sample quantiles.

    Returns
    -------
    ``[L]`` share of (gene, bin) pairs inside each interval, pooled over genes.
    """
    m = _mask(mask, truth.shape[1:])
    x = np.asarray(samples, dtype=np.float64)[:, :, m]
    y = masked_values(truth, m)
    out = []
    for level in np.asarray(levels, dtype=np.float64):
        lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out.append(float(((lo <= y) & (y <= hi)).mean()) if y.size else float("nan"))
    return np.asarray(out)


def coverage_curve_gaussian(
    mean: np.ndarray,
    std: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None,
    levels: tuple[float, ...] | np.ndarray,
) -> np.ndarray:
    """Coverage of Gaussian intervals ``mean ± z·std`` (used when only mean and std are stored).

    Shapes as :func:`coverage_curve` with ``mean, std [G, H, W]``; returns ``[L]``.
    """
    m = _mask(mask, truth.shape[1:])
    mu, sd, y = masked_values(mean, m), masked_values(std, m), masked_values(truth, m)
    out = []
    for level in np.asarray(levels, dtype=np.float64):
        z = norm.ppf((1 + level) / 2)
        inside = np.abs(y - mu) <= z * sd
        out.append(float(inside.mean()) if y.size else float("nan"))
    return np.asarray(out)


@lru_cache(maxsize=64)
def expected_sample_coverage(k: int, level: float = 0.9, n_trials: int = 200_000) -> float:
    """Coverage a *perfectly calibrated* model's sample-quantile interval reaches with K samples.

    The central ``level`` interval from the empirical quantiles of K draws (``numpy.quantile``,
    linear interpolation, as :mod:`diffst.inference` computes ``q05``/``q95``) covers a new draw
    from the same distribution less often than ``level``: the truth's rank among the K + 1
    exchangeable values is uniform, and the interpolated quantiles sit inside the extreme
    samples. Computed by a seeded Monte-Carlo for a Gaussian predictive distribution (0.72 for
    K = 8 at 90 %); the value depends a little on the distribution's shape (0.70 for a uniform
    one), which is why the calibrated coverage, not this reference, is the test of the
    intervals. ±0.002.
    """
    if k < 2 or not 0 < level < 1:
        raise ValueError(f"need K ≥ 2 and 0 < level < 1, got K={k}, level={level}")
    rng = np.random.default_rng(12345)
    draws = rng.standard_normal((n_trials, k + 1))
    lo, hi = np.quantile(draws[:, :k], [(1 - level) / 2, (1 + level) / 2], axis=1)
    y = draws[:, k]
    return float(((lo <= y) & (y <= hi)).mean())


@dataclass(frozen=True)
class ConformalCalibration:
    """Per-gene conformal widening (or narrowing) of sample-quantile intervals.

    The calibrated interval of a bin is ``[lo − q·(sd + δ), hi + q·(sd + δ)]`` (lower end clipped at
    0), with ``lo, hi`` the raw quantiles, ``sd`` the samples' std at that bin, and per gene the
    conformal quantile ``q`` and the floor ``δ`` (the mean std over the calibration bins, so bins
    where every sample agrees can widen too).
    """

    level: float  # nominal coverage, e.g. 0.9
    q: np.ndarray  # [G] conformal quantile of the normalised non-conformity scores
    delta: np.ndarray  # [G] std floor (count scale)
    n_bins: np.ndarray  # [G] calibration bins used
    source: str = ""  # where the calibration data came from (e.g. "validation split")

    def apply(
        self, lo: np.ndarray, hi: np.ndarray, sd: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ``(lower, upper)`` for maps ``[G, ...]`` (genes on the first axis)."""
        shape = (-1,) + (1,) * (np.ndim(lo) - 1)
        width = self.q.reshape(shape) * (np.asarray(sd) + self.delta.reshape(shape))
        lower = np.maximum(np.asarray(lo) - width, 0.0)
        upper = np.asarray(hi) + width
        return lower.astype(np.float32), np.maximum(upper, lower).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``uns`` of an AnnData, a run folder)."""
        return {
            "level": self.level,
            "q": self.q.tolist(),
            "delta": self.delta.tolist(),
            "n_bins": self.n_bins.tolist(),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalCalibration:
        """Inverse of :meth:`to_dict`."""
        return cls(
            float(data["level"]),
            np.asarray(data["q"], dtype=np.float64),
            np.asarray(data["delta"], dtype=np.float64),
            np.asarray(data["n_bins"], dtype=np.int64),
            str(data.get("source", "")),
        )


def conformal_calibration(
    lo: np.ndarray,
    hi: np.ndarray,
    sd: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None,
    level: float = 0.9,
    source: str = "",
) -> ConformalCalibration:
    """Split-conformal calibration of intervals on held-out data (e.g. the validation split).

    Per gene, the normalised non-conformity score of a bin is
    ``e = max(lo − y, y − hi) / (sd + δ)`` (negative inside the interval); ``q`` is its
    ``⌈(n + 1)·level⌉ / n`` empirical quantile over the ``n`` calibration bins, so that the
    calibrated interval of :class:`ConformalCalibration` covers a new exchangeable bin with
    probability ≥ ``level`` (Romano et al. 2019, conformalised quantile regression, with the
    score scaled by the local spread).

    Parameters
    ----------
    lo, hi, sd, truth
        ``[G, H, W]`` raw interval, samples' std and measured counts of the calibration region.
    mask
        ``[H, W]`` bool bins to use.
    """
    m = _mask(mask, truth.shape[1:])
    y, a, b, s = (masked_values(v, m) for v in (truth, lo, hi, sd))
    n = y.shape[1]
    if n == 0:
        raise ValueError("conformal calibration needs at least one calibration bin")
    delta = np.maximum(s.mean(axis=1), 1e-6)
    score = np.maximum(a - y, y - b) / (s + delta[:, None])
    rank = min(1.0, np.ceil((n + 1) * level) / n)
    q = np.quantile(score, rank, axis=1, method="higher")
    return ConformalCalibration(float(level), q, delta, np.full(len(q), n), source)
