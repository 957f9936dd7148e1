"""Bundled-dataset loaders: data root resolution, clear errors, and what each loader returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffst import datasets
from diffst.io import InputError


def test_data_root_default_is_repository_data(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIFFST_DATA", raising=False)
    assert datasets.data_root() == data_dir


def test_env_override_and_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFST_DATA", str(tmp_path))
    assert datasets.data_root() == tmp_path
    with pytest.raises(InputError, match=r"giotto_vizgen_mini.*not found.*DIFFST_DATA"):
        datasets.merfish_mini()
    monkeypatch.setenv("DIFFST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="not a folder"):
        datasets.data_root()


def test_env_points_to_a_copy(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "squidpy_visium").symlink_to(data_dir / "squidpy_visium")
    monkeypatch.setenv("DIFFST_DATA", str(tmp_path))
    s = datasets.visium_mini()
    assert s.platform == "visium" and s.spots is not None and s.spots.n_spots == 100
    assert s.source_files["matrix"].is_relative_to(tmp_path)


def test_loaders() -> None:
    m = datasets.merfish_mini(z_planes=(1,), image="polyt")
    assert m.platform == "merfish" and m.metadata["n_transcripts"] == 44_146
    assert m.image is not None and m.image.channels == ("polyT",)
    c = datasets.cosmx_mini(um_per_px=0.18)
    assert c.image is not None and c.image.um_per_px == pytest.approx(0.18)
    assert datasets.COSMX_ASSUMED_UM_PER_PX == 0.12028
    h = datasets.visium_h5ad_mini(image="lowres")
    assert h.spots is not None and not h.spots.is_raw_counts
    assert h.image is not None and h.image.shape_hw == (88, 49)


def test_load_sample_takes_bundled_names_and_paths(tmp_path: Path) -> None:
    assert "visium_mini" in datasets.BUNDLED
    load_sample = datasets.load_sample
    by_name = load_sample("visium_mini")
    assert by_name.spots is not None and by_name.spots.n_spots == 100
    outs = datasets.data_root() / "squidpy_visium" / "visium_outs"
    with pytest.raises(InputError, match="placeholder"):  # a path goes to the reader (hires)
        load_sample(outs, platform="visium")
    with pytest.raises(InputError):
        load_sample(tmp_path / "nothing_here")
