"""Metrics against hand-computed values on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from diffst import metrics as M


def _maps(seed: int = 0, shape: tuple[int, int, int] = (3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).poisson(3.0, size=shape).astype(np.float64)


def test_pearson_self_is_one_and_negation_minus_one() -> None:
    x = _maps()
    np.testing.assert_allclose(M.pearson_per_gene(x, x), 1.0)
    np.testing.assert_allclose(M.pearson_per_gene(-x, x), -1.0)
    np.testing.assert_allclose(M.spearman_per_gene(x, x), 1.0)


def test_pearson_hand_computed_on_mask() -> None:
    truth = np.array([[[1.0, 2.0], [3.0, 100.0]]])
    pred = np.array([[[1.0, 3.0], [2.0, -7.0]]])
    mask = np.array([[True, True], [True, False]])
    # on the mask: x = (1, 3, 2), y = (1, 2, 3): centred (-1, 1, 0) and (-1, 0, 1) → 1 / 2
    np.testing.assert_allclose(M.pearson_per_gene(pred, truth, mask), [0.5])
    # ranks are the values themselves here
    np.testing.assert_allclose(M.spearman_per_gene(pred, truth, mask), [0.5])
    # errors (0, 1, -1) → sqrt(2/3)
    np.testing.assert_allclose(M.rmse_per_gene(pred, truth, mask), [np.sqrt(2 / 3)])


def test_constant_gene_is_nan_and_counted() -> None:
    truth = _maps(1)
    truth[1] = 4.0
    pred = truth + _maps(2)
    pcc = M.pearson_per_gene(pred, truth)
    assert np.isnan(pcc[1]) and np.isfinite(pcc[[0, 2]]).all()
    s = M.summarise(pcc)
    assert (s.n_defined, s.n_nan) == (2, 1)
    assert s.mean == pytest.approx(np.mean(pcc[[0, 2]]))
    assert s.median == pytest.approx(np.median(pcc[[0, 2]]))
    assert np.isnan(M.ssim_per_gene(pred, truth)[1])


def test_summarise_all_nan() -> None:
    s = M.summarise(np.array([np.nan, np.nan]))
    assert np.isnan(s.mean) and s.n_nan == 2 and s.n_defined == 0


def test_ssim_uses_truth_range_as_data_range() -> None:
    truth = _maps(3, (1, 12, 12)) * 10
    pred = truth + np.random.default_rng(4).normal(0, 5, truth.shape)
    got = M.ssim_per_gene(pred, truth)
    rng = truth.max() - truth.min()
    _, smap = structural_similarity(truth[0], pred[0], data_range=rng, full=True, win_size=7)
    assert got[0] == pytest.approx(smap.mean())
    # a wrong (too large) range inflates SSIM: the default must not be the dtype range
    big = M.ssim_per_gene(pred, truth, data_range=1e6)
    assert big[0] > got[0]
    np.testing.assert_allclose(M.ssim_per_gene(truth, truth), 1.0)


def test_ssim_small_maps_shrink_window() -> None:
    truth = _maps(5, (2, 4, 5))
    assert np.isfinite(M.ssim_per_gene(truth + 1, truth)).all()


def test_paper_protocol_abs_pcc_and_scale_invariance() -> None:
    truth = _maps(6, (2, 3, 8, 8))
    mask = np.ones((2, 8, 8), dtype=bool)
    out = M.paper_protocol(truth, truth, mask)
    np.testing.assert_allclose(out["pcc"], 1.0)
    np.testing.assert_allclose(out["ssim"], 1.0)
    # min-max scaling per patch: an affine change of log1p(pred) leaves it unchanged; a
    # reversed map counts as |PCC| = 1 under the paper protocol
    flipped = np.expm1(np.log1p(truth).max() - np.log1p(truth))
    np.testing.assert_allclose(M.paper_protocol(flipped, truth, mask)["pcc"], 1.0, atol=1e-12)
    assert (out["n_patches"] == 2).all()


def test_paper_protocol_constant_patch_gene_skipped_and_counted() -> None:
    truth = _maps(7, (2, 1, 6, 6))
    truth[0, 0] = 2.0
    out = M.paper_protocol(truth, truth, np.ones((2, 6, 6), dtype=bool))
    assert out["n_patches"][0] == 1 and out["pcc"][0] == pytest.approx(1.0)


def test_pool_sum_and_spot_consistency() -> None:
    x = np.arange(2 * 5 * 5, dtype=np.float64).reshape(2, 5, 5)
    pooled = M.pool_sum(x, 2)
    assert pooled.shape == (2, 3, 3)
    assert pooled[0, 0, 0] == 0 + 1 + 5 + 6
    assert pooled[0, 2, 2] == 24  # partial corner block
    assert pooled.sum() == x.sum()
    np.testing.assert_allclose(M.spot_consistency(x, pooled, 2), 1.0)
    with pytest.raises(ValueError, match="does not match the LR map"):
        M.spot_consistency(x, pooled[:, :2], 2)


def test_shape_mismatch_errors() -> None:
    with pytest.raises(ValueError, match=r"must both be \[G, H, W\]"):
        M.pearson_per_gene(np.zeros((2, 3, 3)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="mask"):
        M.rmse_per_gene(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), np.ones((2, 2), bool))


def test_mass_ratio() -> None:
    truth = np.array([[[1.0, 3.0]], [[0.0, 0.0]]])
    pred = np.array([[[2.0, 6.0]], [[1.0, 1.0]]])
    out = M.mass_ratio_per_gene(pred, truth)
    assert out[0] == pytest.approx(2.0) and np.isnan(out[1])


def _poisson_field(seed: int = 0, f: int = 4, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.gamma(2.0, 1.0, (3, n, n)) * 2.0
    return mu, rng.poisson(mu).astype(np.float64)


def test_detail_pcc_is_zero_for_nearest_and_high_for_the_expected_counts() -> None:
    from diffst.baselines import nearest_upsample

    mu, y = _poisson_field()
    cells = M.lr_cell_index(y.shape[1:], 4)
    mask = np.ones(y.shape[1:], bool)
    near = nearest_upsample(M.pool_sum(y, 4), 4, y.shape[1:])
    np.testing.assert_array_equal(M.detail_pcc_per_gene(near, y, mask, cells), 0.0)
    assert (M.detail_pcc_per_gene(mu, y, mask, cells) > 0.7).all()
    # adding a per-cell constant changes total PCC but not detail PCC
    shifted = mu + 5.0 * (cells % 3)[None]
    np.testing.assert_allclose(
        M.detail_pcc_per_gene(shifted, y, mask, cells), M.detail_pcc_per_gene(mu, y, mask, cells)
    )


def test_within_cell_deviation_uses_only_masked_bins() -> None:
    x = np.arange(16, dtype=float).reshape(1, 4, 4)
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    dev = M.within_cell_deviation(x, M.lr_cell_index((4, 4), 2), mask)
    # cell (0, 0) holds bins 1, 4, 5 once bin 0 is masked: mean 10/3
    np.testing.assert_allclose(dev[0, :3], [1 - 10 / 3, 2 - 4.5, 3 - 4.5])


def test_split_half_ceiling_matches_a_perfect_predictor() -> None:
    """sqrt(Spearman–Brown(r_half)) ≈ PCC(expected counts, one measurement)."""
    mu, y = _poisson_field(seed=3)
    cells = M.lr_cell_index(y.shape[1:], 4)
    mask = np.ones(y.shape[1:], bool)
    ceiling = M.split_half_ceiling(y, mask, cells, n_splits=8, seed=0)
    np.testing.assert_allclose(ceiling.total, M.pearson_per_gene(mu, y, mask), atol=0.03)
    np.testing.assert_allclose(ceiling.detail, M.detail_pcc_per_gene(mu, y, mask, cells), atol=0.03)
    assert (ceiling.half_total < ceiling.total).all()  # half depth agrees less than full depth
    with pytest.raises(ValueError, match="integer counts"):
        M.split_half_ceiling(y + 0.5, mask, cells)
