"""Calibration metrics: synthetic forecasters with known behaviour, CRPS closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from diffst.evaluation import calibration as C


def _gaussian_crps(mu: float, sigma: float, y: np.ndarray) -> np.ndarray:
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


def _forecaster(sigma_pred: float, k: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0, 5, size=(2, 12, 12))
    truth = mu + rng.normal(0, 1.0, size=mu.shape)
    samples = mu[None] + rng.normal(0, sigma_pred, size=(k, *mu.shape))
    return samples, truth, mu


def test_calibrated_forecaster_covers_90_percent() -> None:
    samples, truth, _ = _forecaster(1.0)
    lo, hi = np.quantile(samples, [0.05, 0.95], axis=0)
    cov = C.interval_coverage(lo, hi, truth)
    assert cov.mean() == pytest.approx(0.90, abs=0.03)
    curve = C.coverage_curve(samples, truth, None, (0.5, 0.9))
    np.testing.assert_allclose(curve, [0.5, 0.9], atol=0.04)


def test_overconfident_forecaster_undercovers() -> None:
    samples, truth, mu = _forecaster(0.3)
    lo, hi = np.quantile(samples, [0.05, 0.95], axis=0)
    assert C.interval_coverage(lo, hi, truth).mean() < 0.5
    curve = C.coverage_curve_gaussian(mu, np.full_like(mu, 0.3), truth, None, (0.9,))
    assert curve[0] < 0.5
    calibrated = C.coverage_curve_gaussian(mu, np.ones_like(mu), truth, None, (0.9,))
    assert calibrated[0] == pytest.approx(0.9, abs=0.04)


def test_crps_matches_gaussian_closed_form() -> None:
    rng = np.random.default_rng(1)
    k = 4000
    samples = rng.normal(1.0, 2.0, size=(k, 1, 2, 3))
    truth = np.array([[[-2.0, 0.0, 1.0], [1.5, 3.0, 6.0]]])
    got = C.crps_from_samples(samples, truth)
    expected = _gaussian_crps(1.0, 2.0, truth).mean()
    assert got[0] == pytest.approx(expected, rel=0.03)


def test_crps_hand_computed_two_samples() -> None:
    samples = np.array([0.0, 2.0]).reshape(2, 1, 1, 1)
    truth = np.array([[[1.0]]])
    # E|X - y| = 1, E|X - X'| over distinct pairs = 2 → CRPS = 1 - 1 = 0
    np.testing.assert_allclose(C.crps_from_samples(samples, truth), [0.0])
    # deterministic (identical samples) → CRPS = absolute error
    same = np.full((3, 1, 1, 1), 4.0)
    np.testing.assert_allclose(C.crps_from_samples(same, truth), [3.0])


def test_std_error_correlation_and_diversity() -> None:
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(1, 10, 10))
    err = np.abs(rng.normal(size=truth.shape))
    mean = truth + err
    np.testing.assert_allclose(C.std_error_correlation(err * 2, mean, truth), [1.0])
    collapsed = np.repeat(truth[None], 4, axis=0)
    np.testing.assert_allclose(C.sample_diversity(collapsed), [0.0])
    two = np.stack([np.zeros((1, 2, 2)), np.full((1, 2, 2), 3.0)])
    np.testing.assert_allclose(C.sample_diversity(two), [3.0])
    with pytest.raises(ValueError, match="at least 2"):
        C.sample_diversity(two[:1])


def test_expected_coverage_of_k_samples() -> None:
    from diffst.evaluation.calibration import expected_sample_coverage

    assert expected_sample_coverage(8, 0.9) == pytest.approx(0.72, abs=0.005)
    assert expected_sample_coverage(4, 0.9) < expected_sample_coverage(8, 0.9)
    assert expected_sample_coverage(200, 0.9) == pytest.approx(0.89, abs=0.01)
    # simulated check: K samples and a truth from the same distribution
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(8, 1, 200, 200))
    truth = rng.normal(size=(1, 200, 200))
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    got = C.interval_coverage(lo, hi, truth)[0]
    assert got == pytest.approx(expected_sample_coverage(8, 0.9), abs=0.01)


def test_conformal_calibration_reaches_the_nominal_coverage_on_new_data() -> None:
    """Too-narrow intervals are widened on calibration data; on fresh exchangeable data the
    calibrated 90 % interval covers ≈ 90 %; too-wide ones are narrowed."""
    from diffst.evaluation.calibration import ConformalCalibration, conformal_calibration

    rng = np.random.default_rng(2)

    def data(scale: float) -> tuple[np.ndarray, ...]:
        sd = rng.uniform(0.5, 2.0, (2, 60, 60))
        truth = 20.0 + rng.normal(0, sd)  # counts far from 0: the clip at 0 plays no part
        half = 1.645 * sd * scale
        return 20.0 - half, 20.0 + half, sd * scale, truth

    for scale in (0.4, 2.5):  # over-confident, under-confident
        lo, hi, sd, y = data(scale)
        cal = conformal_calibration(lo, hi, sd, y, None, 0.9, "test")
        assert (cal.q > 0).all() if scale < 1 else (cal.q < 0).all()
        raw = C.interval_coverage(lo, hi, y)
        assert np.all(np.abs(raw - 0.9) >= 0.09)
        lo2, hi2, sd2, y2 = data(scale)
        a, b = cal.apply(lo2, hi2, sd2)
        assert np.all(np.abs(C.interval_coverage(a, b, y2) - 0.9) < 0.03)
        assert ConformalCalibration.from_dict(cal.to_dict()).to_dict() == cal.to_dict()
