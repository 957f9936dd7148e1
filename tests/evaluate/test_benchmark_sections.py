"""run_benchmark across sections: two synthetic legacy-ST training sections, a held-out third."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from diffst.evaluation.benchmark import BenchmarkConfig, run_benchmark
from diffst.evaluation.config import EvaluateConfig
from diffst.io.legacy_st import read_legacy_st
from diffst.sections.config import PrepareConfig, SpotHRConfig, ViewConfig
from tests.prepare.spot_sections import write_sections


@pytest.mark.slow  # ~8 s: three sections, two trainings, sampling
def test_cross_section_benchmark_scores_only_the_held_out_section(tmp_path: Path) -> None:
    files = write_sections(tmp_path / "raw", n=3)
    samples = [read_legacy_st(f["counts"], f["spots"], f["image"]) for f in files]
    prep = PrepareConfig(
        genes=4,
        hr="spots",
        views=ViewConfig(tissue_px=16, cell_grid=2, tile_px=8),
        spots=SpotHRConfig(split_block=8),
    )
    cfg = BenchmarkConfig(
        preset="tiny", overrides=("train.max_steps=2", "train.val_every=0"),
        histology_only=False, regression_steps=2, n_samples=2, sampler="ddim", steps=2,
        evaluate=EvaluateConfig(figures=False),
    )  # fmt: skip
    result = run_benchmark(
        samples[:2], tmp_path / "bench", prep, cfg, held_out=samples[2], console=Console(quiet=True)
    )
    assert set(result.scores) == {
        "diffst", "diffst_unprojected", "regression", "regression_unprojected", "nearest", "bicubic"
    }  # fmt: skip
    text = result.report.read_text()
    assert f"held-out section `{samples[2].name}`" in text
    assert f"`{samples[0].name}`, `{samples[1].name}`" in text
    table = pd.read_csv(result.out_dir / "metrics.csv")
    assert np.isfinite(table[table.metric == "rmse"]["mean"]).all()
    assert not (result.out_dir / "prediction.h5ad").exists()  # no section predict for spot stores
