"""`diffst demo --fast` end to end through the CLI, then `diffst evaluate` on its outputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from diffst.cli import main

REPORT_FILES = (
    "report.md",
    "metrics.csv",
    "per_gene.csv",
    "figures/section_maps.png",
    "figures/gene_maps.png",
    "figures/metric_bars.png",
    "figures/calibration.png",
    "prediction.h5ad",
)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    return out


def test_fast_demo_writes_every_report_file(demo_dir: Path) -> None:
    for name in REPORT_FILES:
        path = demo_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
    text = (demo_dir / "report.md").read_text()
    for method in ("diffst", "diffst_unprojected", "regression", "regression_unprojected",
                   "nearest", "bicubic"):  # fmt: skip
        assert f"| {method} |" in text, method
    from diffst.evaluation.tesla import tesla_available

    if tesla_available() is None:  # installed here: a real row
        assert "| tesla | " in text and "| tesla | unavailable" not in text
    else:
        assert "| tesla | unavailable" in text and "pip install --no-deps TESLAforST" in text
    assert "Fast smoke run" in text and "## Analysis" in text
    assert "one LR grid" in text and "previous protocol" in text
    for figure in ("section_maps", "gene_maps", "metric_bars", "calibration"):
        assert f"figures/{figure}.png" in text


def test_fast_demo_tables(demo_dir: Path) -> None:
    table = pd.read_csv(demo_dir / "metrics.csv")
    diffst = table[table.method == "diffst"].set_index("metric")
    # the sampled model has every uncertainty metric; interpolation has none
    assert {"coverage90", "crps", "diversity", "std_err_corr"} <= set(diffst.index)
    assert {"coverage90_expected", "coverage90_calibrated", "detail_pcc"} <= set(diffst.index)
    assert {"pcc_ceiling", "detail_ceiling", "mass_ratio"} <= set(diffst.index)
    detail = table[(table.method == "nearest") & (table.metric == "detail_pcc")]
    assert detail["mean"].iloc[0] == 0.0  # nearest has no detail below the LR cell
    assert not (table[table.method == "bicubic"].metric == "crps").any()
    assert (
        (table.n_defined + table.n_nan)
        == diffst.loc["pcc", "n_defined"] + diffst.loc["pcc", "n_nan"]
    ).all()
    nearest = table[(table.method == "nearest") & (table.metric == "spot_consistency")]
    assert nearest["mean"].iloc[0] == pytest.approx(1.0)  # nearest re-aggregates exactly
    per_gene = pd.read_csv(demo_dir / "per_gene.csv")
    assert set(per_gene.method) >= {"diffst", "regression", "bicubic"}


def test_cli_evaluate_on_demo_prediction(demo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--pred",
            str(demo_dir / "prediction.h5ad"),
            "--truth",
            str(demo_dir / "store"),
            "--out",
            str(out),
            "--no-figures",
        ]
    )
    assert code == 0
    assert (out / "report.md").is_file() and not (out / "figures").exists()
    assert "report written to" in capsys.readouterr().out


def test_cli_evaluate_bad_truth_is_exit_2(demo_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "none.h5ad"),
            "--truth",
            str(demo_dir / "store"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 2
    assert "prediction file not found" in capsys.readouterr().err
