"""The LR projection of point predictions (``diffst predict``'s default) on a region's grid."""

from __future__ import annotations

import numpy as np

from diffst.evaluation.region import Region
from diffst.evaluation.scoring import MethodPrediction, project_prediction


def _region(rng: np.random.Generator) -> Region:
    g, f, h, w = 2, 2, 4, 6
    hr = rng.poisson(2.0, size=(g, h, w)).astype(np.float32)
    scored = np.ones((h, w), dtype=bool)
    scored[0, 0] = False  # an unscored bin inside a measured cell keeps its value
    lr = hr.reshape(g, h // f, f, w // f, f).sum(axis=(2, 4))
    lr_mask = np.ones((h // f, w // f), dtype=bool)
    lr_mask[1, 2] = False  # an unmeasured cell is left as predicted
    units = np.full(lr_mask.shape, float(f * f))
    return Region(hr, scored, lr, lr_mask, units, (0, 0), ("A", "B"), f, 2)


def test_projection_gives_every_measured_cell_its_total_and_leaves_the_rest() -> None:
    rng = np.random.default_rng(0)
    region = _region(rng)
    mean = rng.uniform(0.1, 3.0, size=region.hr.shape).astype(np.float32)
    mean[1, 0:2, 2:4] = 0.0  # gene B predicted empty in cell (0, 1): its count spread evenly
    q05, q95, std = 0.5 * mean, 2.0 * mean, 0.3 * mean
    samples = np.stack([0.8 * mean, 1.2 * mean])
    pred = MethodPrediction("m", mean, std=std, q05=q05, q95=q95, samples=samples, n_samples=2)
    out = project_prediction(pred, region)
    assert out.mean is not None and out.q05 is not None and out.q95 is not None
    assert out.std is not None and out.samples is not None
    cells = region.cells()
    for g in range(2):
        for cell in range(6):
            r, c = divmod(cell, 3)
            in_cell = (cells == cell) & region.scored
            total = out.mean[g][in_cell].sum()
            if region.lr_mask[r, c]:
                assert np.isclose(total, region.lr[g, r, c], rtol=1e-5), (g, cell)
            else:
                np.testing.assert_array_equal(out.mean[g][cells == cell], mean[g][cells == cell])
    assert out.mean[0, 0, 0] == mean[0, 0, 0]  # unscored bin untouched
    even = region.lr[1, 0, 1] / 4
    np.testing.assert_allclose(out.mean[1, 0:2, 2:4], even, rtol=1e-6)
    np.testing.assert_allclose(out.q05[1, 0:2, 2:4], even, rtol=1e-6)  # shifted by the spread
    # elsewhere every statistic is scaled by its cell's factor
    factor = region.lr[0, 1, 0] / mean[0, 2:4, 0:2].sum()
    np.testing.assert_allclose(out.q95[0, 2:4, 0:2], 2.0 * mean[0, 2:4, 0:2] * factor, rtol=1e-5)
    np.testing.assert_allclose(out.std[0, 2:4, 0:2], 0.3 * mean[0, 2:4, 0:2] * factor, rtol=1e-5)
    np.testing.assert_allclose(out.samples[1, 0, 2:4, 0:2], 1.2 * out.mean[0, 2:4, 0:2], rtol=1e-5)
    assert project_prediction(MethodPrediction("none", None), region).mean is None
