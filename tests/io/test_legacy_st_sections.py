"""Legacy ST as published: counts, spot tables and images in parallel sub-folders per section."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from diffst.api import read
from diffst.io import detect_platform, read_sample
from diffst.io.legacy_st import legacy_st_sections, read_legacy_st
from diffst.io.sample import InputError
from diffst.synthetic import simulate_tissue, write_legacy_st

IDS = ("A1", "B1", "C2")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ST-cnts/<id>.tsv.gz``, ``ST-spotfiles/<id>_selection.tsv``,
    ``ST-imgs/<patient>/<id>/HE_<id>.jpg`` (synthetic sections)."""
    root = tmp_path_factory.mktemp("her2st_like")
    flat = tmp_path_factory.mktemp("flat")
    for k, sid in enumerate(IDS):
        tissue = simulate_tissue(
            width_um=1600.0, height_um=1400.0, n_genes=5, um_per_px=10.0, seed=k
        )
        counts, spots, image = write_legacy_st(tissue, flat, name=f"s{k}", seed=k)
        for src, dst in (
            (counts, root / "ST-cnts" / f"{sid}.tsv.gz"),
            (spots, root / "ST-spotfiles" / f"{sid}_selection.tsv"),
            (image, root / "ST-imgs" / sid[0] / sid / f"HE_{sid}.jpg"),
        ):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return root


def test_sections_are_found_by_id(published: Path) -> None:
    sections = legacy_st_sections(published)
    assert sorted(sections) == list(IDS)
    counts, spots, image = sections["B1"]
    assert counts.name == "B1.tsv.gz" and spots.name == "B1_selection.tsv"
    assert image is not None and image.parent.name == "B1"
    assert detect_platform(published).value == "legacy_st"


def test_a_section_reads_as_its_own_files(published: Path) -> None:
    sample = read_sample(published, section="C2")
    direct = read_legacy_st(*legacy_st_sections(published)["C2"])
    assert sample.name == "C2"
    assert sample.spots is not None and direct.spots is not None
    np.testing.assert_array_equal(sample.spots.counts.toarray(), direct.spots.counts.toarray())
    assert read(published, section="C2").spots.ids == direct.spots.ids  # type: ignore[union-attr]


def test_several_sections_need_a_choice(published: Path) -> None:
    with pytest.raises(InputError, match=r"holds 3 legacy-ST sections.*--section.*A1, B1, C2"):
        read_sample(published)
    with pytest.raises(InputError, match=r"no legacy-ST section 'Z9'; sections: A1, B1, C2"):
        read_sample(published, section="Z9")


def test_ambiguous_files_are_refused(published: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    shutil.copy(copy / "ST-spotfiles" / "A1_selection.tsv", copy / "ST-spotfiles" / "A1_old.tsv")
    with pytest.raises(InputError, match="section 'A1' has several spot tables"):
        legacy_st_sections(copy)


def test_section_elsewhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="bundled dataset has one section"):
        read("merfish_mini", section="A1")


def test_prepare_cli_reads_one_section_and_states_its_pixel_size_once(
    published: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from diffst.cli import main

    n = read_sample(published, section="B1").spots.n_spots  # type: ignore[union-attr]
    caplog.clear()

    code = main(["prepare", "--input", str(published), "--section", "B1", "--hr", "spots",
                 "--genes", "3", "--out", "unused", "--dry-run",
                 "--set", "spots.patch=4", "--set", "spots.stride=2"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"{n} of {n} spots measured" in out.out
    said = [r.getMessage() for r in caplog.records if "µm/px" in r.getMessage()]
    assert len(said) == 1 and "B1_selection.tsv" in said[0], said


def test_benchmark_cli_trains_on_sections_and_holds_one_out(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffst.evaluation.benchmark as benchmark
    from diffst.cli import main

    seen: dict[str, object] = {}

    def fake(samples, out_dir, prepare_cfg, cfg=None, *, held_out=None, **_):
        seen.update(samples=samples, held_out=held_out, hr=prepare_cfg.hr)
        return type("R", (), {"report": Path(out_dir) / "report.md"})()

    monkeypatch.setattr(benchmark, "run_benchmark", fake)
    code = main([
        "benchmark", "--sample", str(published), "--section", "A1", "--section", "B1",
        "--held-out-section", "C2", "--hr", "spots", "--out", str(tmp_path / "b"),
    ])  # fmt: skip
    assert code == 0
    assert [s.name for s in seen["samples"]] == ["A1", "B1"]  # type: ignore[attr-defined]
    assert seen["held_out"].name == "C2" and seen["hr"] == "spots"  # type: ignore[attr-defined]
