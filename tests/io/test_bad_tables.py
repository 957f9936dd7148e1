"""Bad values in transcript and spot tables: one-line errors naming file, field and line.

Each case edits one line of a small MERFISH-layout folder (synthetic values) and runs
``diffst prepare`` on it: exit status 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffst.cli import main
from diffst.io import InputError, read_merfish, read_sample, read_xenium
from diffst.io._tables import Fields, check_fields

N_ROWS = 300
HEADER = "global_x,global_y,gene,global_z"


def _rows(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(1, 99, N_ROWS), rng.uniform(1, 79, N_ROWS)
    genes = rng.choice(["synthA", "synthB", "synthC"], N_ROWS)
    return [f"{a:.3f},{b:.3f},{g},0" for a, b, g in zip(x, y, genes, strict=True)]


def write_merfish(root: Path, rows: list[str], *, newline_at_end: bool = True) -> Path:
    """A MERFISH folder: transcripts (µm), a 1 px/µm transform and an 80 × 100 px DAPI image."""
    images = root / "images"
    images.mkdir(parents=True)
    text = "\n".join([HEADER, *rows]) + ("\n" if newline_at_end else "")
    (root / "detected_transcripts.csv").write_text(text)
    np.savetxt(images / "micron_to_mosaic_pixel_transform.csv", np.eye(3))
    dapi = np.random.default_rng(1).integers(0, 255, (80, 100), dtype=np.uint8)
    Image.fromarray(dapi).save(images / "mosaic_DAPI_z0.png")
    return root


def _edit(line: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
    """Replace field ``column`` of file line ``line`` (header = line 1)."""

    def apply(rows: list[str]) -> list[str]:
        fields = rows[line - 2].split(",")
        fields[column] = value
        rows[line - 2] = ",".join(fields)
        return rows

    return apply


CASES = {
    "empty z": (_edit(50, 3, ""), "line 50: field global_z is empty or NaN"),
    "NaN x": (_edit(56, 0, "NaN"), "line 56: field global_x is empty or NaN"),
    "fractional z": (_edit(51, 3, "1.5"), "line 51: field global_z = '1.5' is not an integer"),
    "non-numeric x": (
        _edit(52, 0, "abc"),
        "line 52: field global_x = 'abc' is not a finite number",
    ),
    "infinite y": (_edit(53, 1, "inf"), "line 53: field global_y = 'inf' is not a finite number"),
    "empty gene": (_edit(54, 2, ""), "line 54: field gene is empty"),
    "blank gene": (_edit(55, 2, "  "), "line 55: field gene is empty"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_names_file_field_and_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, expected = CASES[case]
    folder = write_merfish(tmp_path / "mf", edit(_rows()))
    out = tmp_path / "store"
    assert main(["prepare", "--input", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{folder / 'detected_transcripts.csv'}: {expected}" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mf"]


def test_csv_cut_mid_line_says_truncated(tmp_path: Path) -> None:
    rows = _rows()
    rows[-1] = rows[-1][: rows[-1].index(",", rows[-1].index(",") + 1)]  # "x,y" of the last row
    folder = write_merfish(tmp_path / "mf", rows, newline_at_end=False)
    with pytest.raises(InputError, match=rf"line {N_ROWS + 1}: field global_z is empty or NaN; "
                       "the file ends mid-line, so it looks truncated"):  # fmt: skip
        read_merfish(folder)


def test_good_folder_reads(tmp_path: Path) -> None:
    sample = read_merfish(write_merfish(tmp_path / "mf", _rows()))
    assert sample.genes == ("synthA", "synthB", "synthC")
    assert sum(len(c) for c in sample.transcripts.iter_chunks()) == N_ROWS


def test_line_numbers_continue_across_chunks(tmp_path: Path) -> None:
    folder = write_merfish(tmp_path / "mf", _edit(250, 0, "x")(_rows()))
    with pytest.raises(InputError, match="line 250: field global_x = 'x'"):
        read_merfish(folder, chunk_rows=64)


def test_xenium_parquet_null_gene_names_row(tmp_path: Path) -> None:
    names = ["synthA"] * 10
    names[6] = None
    table = pa.table({
        "feature_name": names, "x_location": np.arange(10.0), "y_location": np.arange(10.0),
        "qv": np.full(10, 30.0),
    })  # fmt: skip
    root = tmp_path / "xenium"
    root.mkdir()
    pq.write_table(table, root / "transcripts.parquet")
    with pytest.raises(
        InputError, match=r"transcripts.parquet: row 7: field feature_name is empty"
    ):
        read_xenium(root, image=None)


def test_xenium_csv_non_numeric_qv(tmp_path: Path) -> None:
    root = tmp_path / "xenium"
    root.mkdir()
    frame = pd.DataFrame({"feature_name": ["synthA"] * 5, "x_location": np.arange(5.0),
                          "y_location": np.arange(5.0), "qv": ["30"] * 4 + ["high"]})  # fmt: skip
    with gzip.open(root / "transcripts.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    with pytest.raises(InputError, match=r"line 6: field qv = 'high' is not a finite number"):
        read_xenium(root, image=None)


def test_check_fields_converts_numbers() -> None:
    frame = pd.DataFrame({"a": ["1", "2.5"], "b": [1.0, 2.0], "g": ["x", "y"]})
    out = check_fields(frame, Path("t.csv"), Fields(numeric=("a",), integer=("b",), text=("g",)),
                       first=2)  # fmt: skip
    assert out["a"].dtype == np.float64 and out["b"].dtype == np.int64
    assert frame["a"].dtype == object  # the input frame is left alone


def test_unknown_platform_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="platform 'foo' has no reader; choose auto or one of"):
        read_sample(tmp_path, platform="foo")


def test_cli_lists_platforms(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            ["prepare", "--input", str(tmp_path), "--out", str(tmp_path / "s"), "--platform", "foo"]
        )
    assert exc.value.code == 2
    assert (
        "invalid choice: 'foo' (choose from 'auto', 'merfish', 'xenium'" in capsys.readouterr().err
    )
