"""A Xenium folder read with its registered post-run H&E from the CLI and ``diffst.read``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import diffst
from diffst.cli import main
from diffst.io.sample import InputError
from diffst.io.writers import HE_ALIGNMENT_FILE, HE_FILE, write_xenium_outs
from diffst.synthetic import simulate_tissue

PREPARE = [
    "--hr-um", "10", "--factor", "4", "--patch", "8", "--stride", "4", "--genes", "6",
    "--set", "views.tissue_px=16", "--set", "views.cell_grid=4", "--set", "views.tile_px=8",
    "--set", "views.stain=reinhard", "--set", "split.block_um=400",
    "--set", "split.fractions=[1.0,0.0,0.0]", "--set", "split.layout=rows",
]  # fmt: skip


@pytest.fixture(scope="module")
def xenium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sample = simulate_tissue(
        width_um=500, height_um=400, n_genes=10, n_cell_types=3, um_per_px=1.0, seed=4
    )
    return write_xenium_outs(sample, tmp_path_factory.mktemp("xe") / "outs", he=True)


def _he(xenium: Path) -> list[str]:
    return ["--he-image", str(xenium / HE_FILE), "--he-alignment", str(xenium / HE_ALIGNMENT_FILE)]


def test_read_takes_the_registered_he(xenium: Path) -> None:
    morph = diffst.read(xenium)
    he = diffst.read(xenium, he_image=xenium / HE_FILE, he_alignment=xenium / HE_ALIGNMENT_FILE)
    assert morph.image is not None and he.image is not None
    assert np.asarray(he.image.pixels).shape[-1] == 3 and he.image.um_per_px == pytest.approx(1.5)
    assert np.asarray(morph.image.pixels).ndim == 2 or np.asarray(morph.image.pixels).shape[-1] != 3
    assert he.metadata["n_transcripts"] == morph.metadata["n_transcripts"]


def test_prepare_and_predict_read_the_he_from_the_cli(
    xenium: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    rc = main(["prepare", "--input", str(xenium), *_he(xenium), "--out", str(store), *PREPARE])
    assert rc == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["image"]["channels"] == ["R", "G", "B"]
    assert manifest["image"]["stain"]["method"] == "reinhard"
    assert manifest["image"]["um_per_px"] == pytest.approx(1.5)
    assert "--he-image" in manifest["command"] and "--he-alignment" in manifest["command"]
    run = diffst.train(
        store, tmp_path / "run", "tiny",
        ["train.max_steps=2", "train.val_every=0", "train.ckpt_every=2"], progress=False,
    )  # fmt: skip
    out = tmp_path / "pred.h5ad"
    args = ["predict", "--checkpoint", str(run.checkpoint), "--input", str(xenium), *_he(xenium)]
    rc = main([*args, "--out", str(out), "--steps", "2", "--samples", "1", "--device", "cpu"])
    assert rc == 0 and out.is_file()
    # without the H&E the section's image is the DAPI mosaic: refused by the H&E checkpoint
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(run.checkpoint), "--input", str(xenium),
               "--out", str(tmp_path / "no.h5ad"), "--steps", "2", "--samples", "1"])  # fmt: skip
    assert rc != 0 and not (tmp_path / "no.h5ad").exists()
    assert "trained on 3" in capsys.readouterr().err


def test_he_options_are_checked(xenium: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="go together"):
        diffst.read(xenium, he_image=xenium / HE_FILE)
    with pytest.raises(InputError, match="not found"):
        diffst.read(xenium, he_image=tmp_path / "none.tif", he_alignment=xenium / HE_ALIGNMENT_FILE)
    with pytest.raises(InputError, match="apply to Xenium folders"):
        diffst.read(
            "visium_mini", he_image=xenium / HE_FILE, he_alignment=xenium / HE_ALIGNMENT_FILE
        )
