"""Bins → spots: membership, aggregation, consistency and total-conserving projection."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.inference.spots import (
    aggregate_to_spots,
    assign_bins_to_spots,
    project_to_spots,
    spot_consistency,
    spot_membership,
)
from diffst.inference.uncertainty import Stat

ORIGIN = (100.0, 200.0)
HR_UM = 10.0


def _two_circles() -> np.ndarray:
    centres = np.array([[150.0, 250.0], [250.0, 250.0]])  # bins 0..9 × 0..19
    return assign_bins_to_spots(centres, 55.0, "circle", ORIGIN, HR_UM, (10, 20))


def test_circle_membership_hand_counted() -> None:
    spot_of_bin = _two_circles()
    # centre (150, 250) sits on the corner of bins (4..5, 4..5): bin-centre offsets are
    # ±5, ±15, ±25 µm per axis; a bin is in the spot when dx² + dy² ≤ 27.5²
    offs = np.array([-25.0, -15.0, -5.0, 5.0, 15.0, 25.0])
    expected = int((np.hypot(offs[:, None], offs[None, :]) <= 27.5).sum())
    assert (spot_of_bin == 0).sum() == expected
    assert (spot_of_bin == 1).sum() == expected
    assert spot_of_bin[0, 0] == -1
    assert spot_of_bin[4, 4] == 0 and spot_of_bin[5, 14] == 1


def test_square_membership_reproduces_grid_pooling() -> None:
    # LR cells of 4×4 bins as square spots of side 40 µm: membership = exact block structure
    h, w, f = 8, 12, 4
    centres = np.array(
        [
            [ORIGIN[0] + (b + 0.5) * f * HR_UM, ORIGIN[1] + (a + 0.5) * f * HR_UM]
            for a in range(h // f)
            for b in range(w // f)
        ]
    )
    spot_of_bin = assign_bins_to_spots(centres, f * HR_UM, "square", ORIGIN, HR_UM, (h, w))
    rows, cols = np.mgrid[0:h, 0:w]
    np.testing.assert_array_equal(spot_of_bin, (rows // f) * (w // f) + cols // f)
    values = np.random.default_rng(0).poisson(3.0, size=(2, h, w)).astype(float)
    sums = aggregate_to_spots(values, spot_membership(spot_of_bin, len(centres)))
    pooled = values.reshape(2, h // f, f, w // f, f).sum(axis=(2, 4)).reshape(2, -1).T
    np.testing.assert_allclose(sums, pooled)


def test_overlapping_spots_give_each_bin_to_the_nearest() -> None:
    centres = np.array([[130.0, 230.0], [150.0, 230.0]])
    spot_of_bin = assign_bins_to_spots(centres, 60.0, "circle", ORIGIN, HR_UM, (6, 8))
    assert spot_of_bin[2, 2] == 0  # bin centre (125, 225): 7 µm from spot 0, 25 µm from spot 1
    assert spot_of_bin[2, 5] == 1  # bin centre (155, 225)
    mask = np.ones((6, 8), dtype=bool)
    mask[2, 2] = False
    masked = assign_bins_to_spots(centres, 60.0, "circle", ORIGIN, HR_UM, (6, 8), mask)
    assert masked[2, 2] == -1


def _stats(rng: np.random.Generator, g: int, shape: tuple[int, int]) -> np.ndarray:
    mean = rng.gamma(2.0, 1.0, size=(g, *shape))
    std = rng.gamma(1.0, 0.3, size=(g, *shape))
    sample_mean = mean * rng.uniform(0.8, 1.2, size=mean.shape)  # X and samples' mean differ
    return np.stack([mean, std, mean - std, mean + std, sample_mean]).astype(np.float32)


def test_projection_conserves_spot_totals_and_leaves_other_bins() -> None:
    rng = np.random.default_rng(0)
    spot_of_bin = _two_circles()
    stats = _stats(rng, 3, (10, 20))
    stats[Stat.MEAN, 2][spot_of_bin == 1] = 0.0  # gene 2 predicted absent in spot 1
    measured = np.array([[10.0, 0.0, 4.0], [3.0, 7.0, 12.0]])
    out = project_to_spots(stats, spot_of_bin, measured)
    member = spot_membership(spot_of_bin, 2)
    np.testing.assert_allclose(aggregate_to_spots(out[Stat.MEAN], member), measured, rtol=1e-5)
    outside = spot_of_bin < 0
    np.testing.assert_array_equal(out[:, :, outside], stats[:, :, outside])
    # rescaled spots scale every statistic by the same factor
    in0 = spot_of_bin == 0
    ratio = out[Stat.MEAN, 0][in0] / stats[Stat.MEAN, 0][in0]
    np.testing.assert_allclose(out[Stat.STD, 0][in0], stats[Stat.STD, 0][in0] * ratio, rtol=1e-5)
    np.testing.assert_allclose(out[Stat.Q95, 0][in0], stats[Stat.Q95, 0][in0] * ratio, rtol=1e-5)
    sample_mean = stats[Stat.SAMPLE_MEAN, 0][in0] * ratio
    np.testing.assert_allclose(out[Stat.SAMPLE_MEAN, 0][in0], sample_mean, rtol=1e-5)
    # zero prediction with a measurement → spread uniformly, std untouched
    in1 = spot_of_bin == 1
    np.testing.assert_allclose(out[Stat.MEAN, 2][in1], 12.0 / in1.sum(), rtol=1e-6)
    np.testing.assert_array_equal(out[Stat.STD, 2][in1], stats[Stat.STD, 2][in1])
    assert np.all(out[Stat.MEAN, 1][in0] == 0.0)  # measured 0 → zero
    assert stats is not out


def test_consistency_report() -> None:
    rng = np.random.default_rng(2)
    measured = rng.poisson(5.0, size=(30, 3)).astype(float)
    predicted = measured * 2.0
    predicted[:, 2] = 1.0  # constant gene → undefined correlation
    bins = np.full(30, 4)
    bins[0] = 0
    rep = spot_consistency(predicted, measured, ("a", "b", "c"), bins)
    assert rep["pcc"]["a"] == pytest.approx(1.0)
    assert np.isnan(rep["pcc"]["c"])
    assert rep["mean_pcc"] == pytest.approx(1.0)
    assert rep["n_spots"] == 29 and rep["n_spots_empty"] == 1
    used = bins > 0
    expect = predicted[used].sum() / measured[used].sum()
    assert rep["total_ratio"] == pytest.approx(expect)
