"""MERFISH image channels chosen by name, from Python and from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from diffst.cli import main
from diffst.datasets import load_sample
from diffst.io import InputError, read_merfish
from tests.test_faults import PREPARE, write_merfish_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_merfish_folder(tmp_path_factory.mktemp("merfish") / "section")


def test_channels_by_name(folder: Path) -> None:
    polyt = tifffile.imread(folder / "images" / "mosaic_polyT_z0.tif")
    sample = read_merfish(folder, image=["polyT"])
    assert sample.image is not None and sample.image.channels == ("polyT",)
    np.testing.assert_array_equal(np.asarray(sample.image.pixels)[..., 0], polyt)
    both = read_merfish(folder, image=["dapi", "POLYT"])
    assert both.image is not None and both.image.channels == ("DAPI", "polyT")
    assert read_merfish(folder).image.channels == ("DAPI",)  # type: ignore[union-attr]


def test_unknown_channel_is_refused(folder: Path) -> None:
    with pytest.raises(InputError, match=r"MERFISH image channels \['GFP'\]: choose from"):
        read_merfish(folder, image=["GFP"])


def test_load_sample_passes_channels_to_merfish_only(folder: Path) -> None:
    sample = load_sample(folder, image_channels=["polyT"])
    assert sample.image is not None and sample.image.channels == ("polyT",)
    with pytest.raises(InputError, match="chosen by reader only for MERFISH folders"):
        load_sample("visium_mini", image_channels=["DAPI"])


def test_prepare_cli_reads_the_channels_given(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    args = ["prepare", "--input", str(folder), "--out", str(out), *PREPARE]
    assert main([*args, "--image-channels", "DAPI", "polyT"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["channels"] == ["DAPI", "polyT"]
    assert "--image-channels DAPI polyT" in manifest["command"]
    assert np.load(out / "train" / "tissue.npy", mmap_mode="r").shape[1] == 2
