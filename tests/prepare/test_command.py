"""``diffst prepare`` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import diffst.commands.prepare as command
from diffst.cli import main
from tests.prepare.synthetic import synthetic_sample

SMALL = [
    "--genes",
    "3",
    "--hr-um",
    "4",
    "--factor",
    "2",
    "--patch",
    "8",
    "--stride",
    "4",
    "--set",
    "views.tissue_px=16",
    "--set",
    "views.cell_grid=4",
    "--set",
    "views.tile_px=4",
]


@pytest.fixture(autouse=True)
def _synthetic_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "_load_sample", lambda args: synthetic_sample(8000))


def test_cli_writes_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "prep.yaml"
    cfg.write_text("split:\n  block_um: 32\n  seed: 3\ntissue:\n  min_patch_fraction: 0.2\n")
    out = tmp_path / "store"
    rc = main(["prepare", "--input", "x", "--out", str(out), "--config", str(cfg), *SMALL])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed
    for label, name in (("summary", "summary.md"), ("figure", "alignment.png")):
        assert f"  {label + ':':<10}{out / name}" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["genes"]) == 3 and m["config"]["split"]["seed"] == 3
    assert m["config"]["views"]["tile_px"] == 4
    assert "--hr-um 4" in m["command"]
    assert (out / "alignment.png").stat().st_size > 1000
    assert "## Patches" in (out / "summary.md").read_text()


def test_cli_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store"
    rc = main(
        [
            "prepare",
            "--input",
            "x",
            "--out",
            str(out),
            "--dry-run",
            "--set",
            "split.block_um=32",
            *SMALL,
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "hr_um: 4.0" in text and "# patches: train" in text
    assert not out.exists()


def test_cli_bad_value_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["prepare", "--input", "x", "--out", str(tmp_path / "s"), "--set", "views.nope=1"])
    assert rc == 2
    assert "unknown key" in capsys.readouterr().err
    rc = main(["prepare", "--input", "x", "--out", str(tmp_path / "s"), *SMALL, "--patch", "99"])
    assert rc == 2 and "larger than the region" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--factor", "3"], "--factor 3 is not used with --hr spots (the spot array is the HR "
                            "grid); use --set spots.factor=3"),
        (["--patch", "16"], "--patch 16 is not used with --hr spots"),
        (["--hr-um", "2"], "--hr-um 2.0 is not used with --hr spots (the spot array is the HR"),
        (["--set", "stride=4"], "stride=4 is not used with --hr spots"),
    ],
)  # fmt: skip
def test_cli_refuses_binning_flags_with_spots(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["prepare", "--input", "x", "--out", str(out), "--hr", "spots", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()
