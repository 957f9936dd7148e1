"""Per-bin statistics over K samples against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffst.inference.uncertainty import QUANTILES, Stat, quantile_linear, sample_statistics


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_statistics_match_numpy(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.gamma(2.0, 1.5, size=(3, k, 4, 5, 6))
    out = sample_statistics(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 4, 4, 5, 6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, Stat.MEAN], x.mean(1), rtol=1e-5)
    ref_std = x.std(1, ddof=1) if k > 1 else np.zeros_like(x[:, 0])
    np.testing.assert_allclose(out[:, Stat.STD], ref_std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, Stat.Q05], np.quantile(x, QUANTILES[0], axis=1), rtol=1e-5)
    np.testing.assert_allclose(out[:, Stat.Q95], np.quantile(x, QUANTILES[1], axis=1), rtol=1e-5)


def test_quantile_hand_computed() -> None:
    x = torch.tensor([[0.0, 10.0, 20.0, 30.0, 40.0]])
    # position 0.05·4 = 0.2 → 0 + 0.2·10; 0.95·4 = 3.8 → 30 + 0.8·10
    assert quantile_linear(x, 0.05, dim=1).item() == pytest.approx(2.0)
    assert quantile_linear(x, 0.95, dim=1).item() == pytest.approx(38.0)
    stats = sample_statistics(x.reshape(1, 5, 1, 1, 1))
    assert stats[0, Stat.MEAN].item() == pytest.approx(20.0)
    assert stats[0, Stat.STD].item() == pytest.approx(np.sqrt(250.0))
    assert (stats[0, Stat.Q05] <= stats[0, Stat.MEAN]).all()


def test_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\[B, K, G, H, W\]"):
        sample_statistics(torch.zeros(2, 3, 4, 5))
