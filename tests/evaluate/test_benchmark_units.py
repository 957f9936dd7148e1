"""Benchmark configuration checks, the TESLA unavailable path and the analysis notes."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.evaluation.benchmark import BenchmarkConfig, _training_samples
from diffst.evaluation.config import EvaluateConfig
from diffst.evaluation.region import PatchSet, region_from_patches, stitch_patches
from diffst.evaluation.scoring import score_method
from diffst.evaluation.tesla import INSTALL_HINT, tesla_available, tesla_prediction


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
    from diffst.sections.config import PrepareConfig

    with pytest.raises(ConfigError, match=r"prepare\.hr=spots and a held-out"):
        _training_samples([object(), object()], None, PrepareConfig())
    with pytest.raises(ConfigError, match="no training section"):
        _training_samples([], None, PrepareConfig())


@pytest.mark.skipif(tesla_available() is None, reason="TESLA is installed here")
def test_tesla_reported_unavailable_not_zero() -> None:
    region = region_from_patches(_patches())
    pred = tesla_prediction(object(), region, None)
    assert pred.mean is None and "pip install --no-deps TESLAforST" in (pred.unavailable or "")
    assert INSTALL_HINT in (pred.unavailable or "")
    scores = score_method(pred, region, EvaluateConfig())
    assert scores.unavailable is not None and scores.genes.empty


def test_benchmark_cli_rejects_bad_input(tmp_path, capsys) -> None:
    from diffst.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--sample", "x", "--out", str(tmp_path), "--ablation", "use_magic"])
    assert exit_info.value.code == 2
    code = main(["benchmark", "--sample", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "missing" in capsys.readouterr().err


def test_stitched_intervals_are_one_patchs_interval_not_an_average() -> None:
    """Overlapping patches' quantiles are never averaged: each bin takes the interval of the
    patch where it is most central, so coverage is that of real sample intervals."""
    hr = np.zeros((2, 1, 8, 8), np.float32)  # two patches overlapping in 4 columns, truth 0
    truth = PatchSet(
        hr, np.zeros((2, 1, 2, 2), np.float32), np.ones((2, 8, 8), bool), np.ones((2, 2, 2), bool),
        np.array([[0, 0], [0, 4]]), ("A",), 4,
    )  # fmt: skip
    region = region_from_patches(truth)
    lo = np.stack([np.zeros((1, 8, 8)), np.full((1, 8, 8), 2.0)]).astype(np.float32)
    stitched = stitch_patches(np.stack([lo, lo + 1.0], axis=1), truth, region, "central")
    assert set(np.unique(stitched[0])) == {0.0, 2.0}  # no averaged bound (1.0) anywhere
    overlap = stitched[0, 0, :, 4:8]
    # columns 4–5 are more central in patch 1 (cols 0–7), columns 6–7 in patch 2 (cols 4–11)
    np.testing.assert_array_equal(overlap[:, :2], 0.0)
    np.testing.assert_array_equal(overlap[:, 2:], 2.0)
    blended = stitch_patches(lo, truth, region, "blend")
    assert np.all((blended[0, :, 4:8] > 0) & (blended[0, :, 4:8] < 2))


def test_benchmark_cli_shapes_the_store_like_prepare(capsys) -> None:
    """--hr-um/--factor/--hr/--genes reach the store's PrepareConfig as in ``diffst prepare``;
    --prepare-set still applies; spot stores refuse the binning flags with the same message."""
    import argparse

    from diffst.cli import build_parser, main
    from diffst.commands.prepare import build_config

    parser = build_parser()
    args = parser.parse_args(
        ["benchmark", "--sample", "s", "--out", "o", "--hr-um", "8", "--factor", "5",
         "--genes", "12", "--threads", "1", "--prepare-set", "split.block_um=96"]
    )  # fmt: skip
    cfg = build_config(args, list(args.prepare_overrides))
    assert (cfg.hr_um, cfg.factor, cfg.genes, cfg.split.block_um) == (8.0, 5, 12, 96.0)
    assert isinstance(args, argparse.Namespace) and args.threads == 1
    code = main(["benchmark", "--sample", "s", "--out", "o", "--hr", "spots", "--factor", "3"])
    assert code == 2
    assert "--factor 3 is not used with --hr spots" in capsys.readouterr().err
