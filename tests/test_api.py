"""The top-level API: light import, the README's names, and one pass through the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diffst

PREPARE = [
    "genes=4", "hr_um=10", "factor=4", "patch=8", "stride=8", "views.tissue_px=32",
    "views.cell_grid=4", "views.tile_px=8", "split.block_um=120", "split.layout=rows",
]  # fmt: skip


def test_import_is_light() -> None:
    code = "import sys, diffst; print('torch' in sys.modules, 'anndata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", [n for n in diffst.__all__ if n != "__version__"])
def test_every_exported_name_resolves_and_is_documented(name: str) -> None:
    value = getattr(diffst, name)
    assert value.__doc__ and value.__doc__.strip()
    assert name in dir(diffst)


def test_every_reader_and_command_is_at_the_top_level() -> None:
    import diffst.io
    from diffst.cli import COMMANDS

    readers = {n for n in diffst.io.__all__ if n.startswith("read_")}
    assert readers <= set(diffst.__all__)
    # one function per pipeline command (demo is the benchmark on bundled data)
    assert set(COMMANDS) - {"demo"} <= set(diffst.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'prepair'"):
        diffst.prepair  # noqa: B018


def test_read_passes_a_sample_through_and_reads_a_bundled_one() -> None:
    sample = diffst.read("merfish_mini", image_channels=["DAPI"])
    assert diffst.read(sample) is sample
    assert isinstance(sample, diffst.SpatialSample)
    assert sample.image is not None and sample.image.channels == ("DAPI",)


def test_pipeline_through_the_top_level_names(tmp_path: Path) -> None:
    sample = diffst.read("merfish_mini")
    store = diffst.prepare(sample, tmp_path / "store", overrides=PREPARE)
    assert store.n_patches("train") > 0 and len(store.manifest["genes"]) == 4
    run = diffst.train(
        store.path, tmp_path / "run", "tiny",
        ["train.max_steps=2", "train.batch_size=2", "train.val_every=0", "train.device=cpu"],
        progress=False,
    )  # fmt: skip
    assert run.step == 2
    adata = diffst.predict(
        tmp_path / "run", "merfish_mini", tmp_path / "pred.h5ad", steps=1, n_samples=2,
        device="cpu", n_figure_genes=0,
    )  # fmt: skip
    assert adata is not None and adata.n_vars == 4
    assert np.isfinite(adata.X).all()
    report = diffst.evaluate(tmp_path / "pred.h5ad", store.path, out_dir=None)
    assert "diffst" in set(report.summary()["method"])
    # resuming through the same function continues the checkpoint's own configuration
    again = diffst.train(store.path, tmp_path / "run", overrides=["train.max_steps=3"],
                         resume=True, progress=False)  # fmt: skip
    assert again.step == 3


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python block as printed, with 2 training steps instead of 400."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "train.max_steps=400" in block
    block = block.replace("train.max_steps=400", "train.max_steps=2")
    block = block.replace("sc.pl.spatial(", "sc.pl.spatial(show=False, adata=")  # no window
    pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["adata"].n_obs > 0  # type: ignore[attr-defined]
    assert (tmp_path / "runs" / "pred.h5ad").is_file()


@pytest.mark.slow
def test_readme_visium_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Visium walkthrough (both routes) as printed, with 2 training steps."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Super-resolve your Visium section", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block.count("train.max_steps=400") == 2
    block = block.replace("train.max_steps=400", "train.max_steps=2")
    block = block.replace("sc.pl.spatial(", "sc.pl.spatial(show=False, adata=")
    pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)
    bins, subspots = scope["bins"], scope["subspots"]
    assert bins.n_obs > 0 and "below_pitch" not in bins.uns["diffst"]  # type: ignore[attr-defined]
    below = subspots.uns["diffst"]["below_pitch"]  # type: ignore[attr-defined]
    assert below["factor"] == 2 and below["lattice"] == "hex"
    assert subspots.n_obs == 4 * subspots.obs["spot"].nunique()  # type: ignore[attr-defined]
