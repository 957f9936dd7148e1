"""Benchmark configuration checks, the TESLA unavailable path and the analysis notes."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.evaluate.benchmark import BenchmarkConfig, _training_samples
from diffst.evaluate.config import EvaluateConfig
from diffst.evaluate.scoring import PatchSet, score_method
from diffst.evaluate.tesla import INSTALL_HINT, tesla_available, tesla_prediction


def _patches() -> PatchSet:
    rng = np.random.default_rng(0)
    hr = rng.poisson(2.0, size=(2, 2, 8, 8)).astype(np.float32)
    lr = hr.reshape(2, 2, 2, 4, 2, 4).sum(axis=(3, 5))
    return PatchSet(
        hr,
        lr,
        np.ones((2, 8, 8), bool),
        np.ones((2, 2, 2), bool),
        np.array([[0, 0], [0, 8]]),
        ("A", "B"),
        4,
    )


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="n_samples"):
        BenchmarkConfig(n_samples=1)
    with pytest.raises(ConfigError, match="unknown"):
        BenchmarkConfig(ablations=("use_magic",))  # type: ignore[arg-type]
    from diffst.prepare.config import PrepareConfig

    with pytest.raises(ConfigError, match=r"prepare\.hr=spots and a held-out"):
        _training_samples([object(), object()], None, PrepareConfig())
    with pytest.raises(ConfigError, match="no training section"):
        _training_samples([], None, PrepareConfig())


@pytest.mark.skipif(tesla_available() is None, reason="TESLA is installed here")
def test_tesla_reported_unavailable_not_zero() -> None:
    truth = _patches()
    pred = tesla_prediction(object(), truth, None)
    assert pred.mean is None and "pip install --no-deps TESLAforST" in (pred.unavailable or "")
    assert INSTALL_HINT in (pred.unavailable or "")
    scores = score_method(pred, truth, EvaluateConfig())
    assert scores.unavailable is not None and scores.genes.empty


def test_benchmark_cli_rejects_bad_input(tmp_path, capsys) -> None:
    from diffst.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--sample", "x", "--out", str(tmp_path), "--ablation", "use_magic"])
    assert exit_info.value.code == 2
    code = main(["benchmark", "--sample", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "missing" in capsys.readouterr().err


def test_coverage_counts_each_patch_interval_not_their_stitched_average() -> None:
    from diffst.evaluate.scoring import MethodPrediction

    hr = np.zeros((2, 1, 4, 4), np.float32)  # two patches overlapping in 2 columns, truth 0
    truth = PatchSet(
        hr, hr.reshape(1 * 2, 1, 1, 4, 1, 4).sum(axis=(3, 5)).reshape(2, 1, 1, 1),
        np.ones((2, 4, 4), bool), np.ones((2, 1, 1), bool), np.array([[0, 0], [0, 2]]),
        ("A",), 4,
    )  # fmt: skip
    lo = np.stack([np.zeros((1, 4, 4)), np.full((1, 4, 4), 2.0)]).astype(np.float32)
    pred = MethodPrediction("m", lo.copy(), np.ones_like(lo), lo, lo + 1.0)
    scores = score_method(pred, truth, EvaluateConfig(figures=False))
    # patch 1's intervals [0, 1] hold the zeros, patch 2's [2, 3] do not: half of all pairs;
    # averaging the overlapping columns' bounds first would give [1, 2] there and 0.25
    assert scores.genes["coverage90"].iloc[0] == pytest.approx(0.5)
