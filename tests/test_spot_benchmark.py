"""Cross-section generalisation on synthetic legacy ST (labelled synthetic): train on two
sections, score a held-out third section against the bicubic baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffst.io.legacy_st import read_legacy_st
from diffst.preparation.spots.api import SECTION_FILE, prepare_multi
from diffst.sections.config import PrepareConfig, SpotHRConfig, ViewConfig
from tests.prepare.spot_sections import write_sections


def run_spot_benchmark(root: Path, overrides: list[str]) -> dict[str, dict[str, float]]:
    """prepare_multi → train (tiny preset) → sample the held-out section → score vs bicubic.

    Returns mean metrics over genes per method (``diffst``, ``bicubic``, ``nearest``).
    """
    from diffst.data.dataset import PatchDataset
    from diffst.evaluation.api import baseline_predictions, load_store_split
    from diffst.evaluation.benchmark import sample_split
    from diffst.evaluation.config import EvaluateConfig
    from diffst.evaluation.region import region_from_patches
    from diffst.evaluation.scoring import score_all
    from diffst.runs.config import resolve_run_config
    from diffst.training.loop import train

    files = write_sections(root / "raw", n=3)
    samples = [read_legacy_st(f["counts"], f["spots"], f["image"]) for f in files]
    views = ViewConfig(tissue_px=16, cell_grid=2, tile_px=8)
    cfg = PrepareConfig(genes=4, hr="spots", views=views, spots=SpotHRConfig(split_block=8))
    store = prepare_multi(samples[:2], samples[2], root / "store", cfg).path
    run = train(store, root / "run", resolve_run_config("tiny", None, overrides), progress=False)
    data = PatchDataset(store, "test")
    draws = sample_split(run.checkpoint, data, name="diffst", n_samples=2, seed=0)
    truth, _ = load_store_split(store, "test")
    region = region_from_patches(truth)
    pred = draws.on_region(truth, region)
    ecfg = EvaluateConfig(figures=False)
    scores = score_all([pred, *baseline_predictions(region, ecfg)], region, ecfg)
    return {s.name: {k: float(np.nanmean(v)) for k, v in s.genes.items()} for s in scores}


def test_held_out_section_is_scored_against_bicubic(tmp_path: Path) -> None:
    metrics = run_spot_benchmark(tmp_path, ["train.max_steps=4"])
    store = tmp_path / "store"
    assert set(np.load(store / "test" / SECTION_FILE)) == {2}  # only the held-out section
    m = json.loads((store / "manifest.json").read_text())
    assert m["spots"]["sections"][2]["role"] == "heldout"
    for method in ("diffst", "bicubic"):
        assert np.isfinite(metrics[method]["pcc"]) and np.isfinite(metrics[method]["rmse"])
        assert -1.0 <= metrics[method]["pcc"] <= 1.0 and metrics[method]["rmse"] >= 0.0


@pytest.mark.slow
def test_spot_benchmark_longer_training(tmp_path: Path) -> None:
    """A few hundred steps: the held-out numbers quoted in the prepare notes."""
    metrics = run_spot_benchmark(tmp_path, ["train.max_steps=300", "train.val_every=100"])
    for method in ("diffst", "bicubic", "nearest"):
        row = metrics[method]
        print(f"{method}: pcc {row['pcc']:.3f} ssim {row['ssim']:.3f} rmse {row['rmse']:.3f}")
    assert np.isfinite(metrics["diffst"]["pcc"])


@pytest.mark.slow
def test_run_benchmark_with_spot_sections(tmp_path: Path) -> None:
    """``diffst benchmark`` (one training section + a held-out one) on ``--hr spots`` stores."""
    from diffst.evaluation.benchmark import BenchmarkConfig, run_benchmark
    from diffst.evaluation.config import EvaluateConfig

    files = write_sections(tmp_path / "raw", n=2)
    samples = [read_legacy_st(f["counts"], f["spots"], f["image"]) for f in files]
    views = ViewConfig(tissue_px=16, cell_grid=2, tile_px=8)
    cfg = PrepareConfig(genes=4, hr="spots", views=views, spots=SpotHRConfig(split_block=8))
    bench = BenchmarkConfig(
        preset="tiny",
        regression=False,
        histology_only=False,
        predict_section=False,
        tesla=False,
        n_samples=2,
        evaluate=EvaluateConfig(figures=False),
    )
    result = run_benchmark(samples[0], tmp_path / "bench", cfg, bench, held_out=samples[1])
    text = result.report.read_text()
    assert "held-out section `section1_counts`" in text and "| bicubic |" in text


def test_sample_split_scores_the_denoiser_mean_of_v_checkpoints(tmp_path: Path) -> None:
    from diffst.config import ConfigError
    from diffst.data.dataset import PatchDataset
    from diffst.evaluation.benchmark import sample_split
    from diffst.runs.config import resolve_run_config
    from diffst.training.loop import train

    files = write_sections(tmp_path / "raw", n=3)
    samples = [read_legacy_st(f["counts"], f["spots"], f["image"]) for f in files]
    views = ViewConfig(tissue_px=16, cell_grid=2, tile_px=8)
    cfg = PrepareConfig(genes=4, hr="spots", views=views, spots=SpotHRConfig(split_block=8))
    store = prepare_multi(samples[:2], samples[2], tmp_path / "store", cfg).path
    data = PatchDataset(store, "test")
    over = ["train.max_steps=2", "train.val_every=0"]
    v_run = train(
        store,
        tmp_path / "v",
        resolve_run_config("tiny", None, [*over, "diffusion.prediction=v"]),
        progress=False,
    )
    auto = sample_split(v_run.checkpoint, data, name="d", n_samples=2, seed=0)
    plain = sample_split(
        v_run.checkpoint, data, name="d", n_samples=2, seed=0, mean_estimator="samples"
    )
    assert auto.samples is not None and plain.samples is not None and auto.mean is not None
    np.testing.assert_array_equal(auto.samples, plain.samples)  # same draws either way
    np.testing.assert_array_equal(plain.mean, plain.samples.mean(axis=1))
    assert not np.allclose(auto.mean, plain.mean) and np.isfinite(auto.mean).all()
    assert "denoiser posterior mean" in auto.description
    eps_run = train(store, tmp_path / "e", resolve_run_config("tiny", None, over), progress=False)
    with pytest.raises(ConfigError, match="mean_estimator"):
        sample_split(eps_run.checkpoint, data, name="d", n_samples=2, mean_estimator="denoiser")
