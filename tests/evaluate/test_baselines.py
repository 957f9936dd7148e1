"""Interpolation baselines: scale conservation and geometry."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.baselines import bicubic_upsample, interpolation_baseline, nearest_upsample
from diffst.metrics import pool_sum


def test_nearest_conserves_lr_sums() -> None:
    lr = np.random.default_rng(0).poisson(20, size=(2, 3, 4)).astype(np.float32)
    up = nearest_upsample(lr, 4)
    assert up.shape == (2, 12, 16)
    np.testing.assert_allclose(pool_sum(up, 4), lr, rtol=1e-6)
    assert up[0, 0, 0] == pytest.approx(lr[0, 0, 0] / 16)


def test_bicubic_constant_and_linear_maps() -> None:
    const = np.full((1, 3, 3), 32.0)
    np.testing.assert_allclose(bicubic_upsample(const, 4), 2.0, rtol=1e-6)
    lr = np.random.default_rng(1).poisson(9, size=(1, 4, 4)).astype(np.float64)
    up = bicubic_upsample(lr, 3, (11, 12))
    assert up.shape == (1, 11, 12) and (up >= 0).all()
    # total mass close to the LR total (interpolation, not exact)
    assert up.sum() == pytest.approx(lr[:, :, :].sum() * 11 / 12, rel=0.2)


def test_bad_shapes_and_names() -> None:
    lr = np.ones((1, 2, 2))
    with pytest.raises(ValueError, match="not covered"):
        nearest_upsample(lr, 2, (5, 4))
    with pytest.raises(ValueError, match="unknown interpolation baseline"):
        interpolation_baseline("lanczos", lr, 2)  # type: ignore[arg-type]


def test_baselines_spread_counts_over_measured_units_and_fill_unmeasured_cells() -> None:
    from diffst.baselines import cell_means, interpolation_baseline

    lr = np.array([[[8.0, 3.0], [0.0, 4.0]]])  # [G=1, 2, 2] pooled spot blocks
    units = np.array([[4.0, 1.0], [0.0, 4.0]])  # one cell with a single spot, one with none
    mask = units > 0
    means = cell_means(lr, units, mask)
    np.testing.assert_allclose(means[0], [[2.0, 3.0], [2.0, 1.0]])  # (1, 0) ← nearest cell
    near = interpolation_baseline("nearest", lr, 2, units=units, lr_mask=mask)
    np.testing.assert_allclose(near[0, :2, 2:], 3.0)  # not 3/4: not diluted by unmeasured spots
    assert np.isfinite(interpolation_baseline("bicubic", lr, 2, units=units, lr_mask=mask)).all()
