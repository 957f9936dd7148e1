"""Report text: plain comparisons (lower-is-better metrics), NaN counts, unavailable methods."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffst.evaluation.report import comparison_lines, headline_markdown, summary_frame
from diffst.evaluation.scoring import MethodScores


def _scores(name: str, pcc: list[float], rmse: list[float]) -> MethodScores:
    genes = pd.DataFrame({"pcc": pcc, "rmse": rmse}, index=pd.Index(["a", "b"], name="gene"))
    return MethodScores(name, genes)


def test_comparison_says_plainly_when_reference_loses() -> None:
    scores = [
        _scores("diffst", [0.5, 0.7], [2.0, 2.0]),
        _scores("bicubic", [0.8, 0.8], [1.0, 1.0]),
        _scores("nearest", [0.1, 0.1], [3.0, 3.0]),
        _scores("diffst_section", [0.9, 0.9], [0.1, 0.1]),
    ]
    lines = comparison_lines(summary_frame(scores), "diffst")
    assert len(lines) == 2  # variants of the reference are not compared with it
    assert lines[0].startswith("- **diffst does NOT beat bicubic** on: PCC 0.600 vs 0.800")
    assert "RMSE 2.000 vs 1.000" in lines[0]
    assert lines[1] == (
        "- diffst beats nearest on every compared metric: PCC 0.600 vs 0.100; RMSE 2.000 vs 3.000."
    )


def test_headline_counts_nan_genes_and_marks_unavailable() -> None:
    scores = [
        _scores("diffst", [np.nan, 0.4], [1.0, 1.0]),
        MethodScores("tesla", pd.DataFrame(), unavailable="not installed"),
    ]
    summary = summary_frame(scores)
    row = summary[(summary.method == "diffst") & (summary.metric == "pcc")].iloc[0]
    assert (row["mean"], row.n_defined, row.n_nan) == (0.4, 1, 1)
    table = headline_markdown(scores, summary)
    assert "| diffst | 0.400 (1 NaN) | 1.000 |" in table
    assert "| tesla | unavailable (see below) |" in table
