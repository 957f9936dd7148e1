"""Synthetic Visium (labelled synthetic): one H&E section gives a transcript-resolved training
region and a Space Ranger folder of another region under another stain; the transcript-trained
route (``--lr visium``) predicts the folder as ``read_visium`` reads it and is scored on the
region's known molecules, with and without stain normalisation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial import cKDTree

import diffst
from diffst.io.sample import SpatialSample
from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig
from diffst.synthetic import (
    RUIFROK_EOSIN,
    RUIFROK_HAEMATOXYLIN,
    StainShift,
    VisiumPair,
    simulate_visium_pair,
)

UM_PER_PX = 1.0
HEIGHT_UM = 400.0
TRAIN_STEPS = ["train.max_steps=3", "train.val_every=0", "train.ckpt_every=3"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> VisiumPair:
    out = tmp_path_factory.mktemp("visium") / "outs"
    return simulate_visium_pair(
        out, train_width_um=600.0, visium_width_um=400.0, height_um=HEIGHT_UM, gap_um=50.0,
        n_genes=6, n_cell_types=3, um_per_px=UM_PER_PX, seed=3,
    )  # fmt: skip


@pytest.fixture(scope="module")
def visium(pair: VisiumPair) -> SpatialSample:
    return diffst.read_visium(pair.visium_dir)


def _molecules(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(sample.transcripts.iter_chunks())  # type: ignore[union-attr]
    return tuple(np.concatenate([getattr(c, f) for c in chunks]) for f in ("x_um", "y_um", "gene"))


def _config(stain: str) -> PrepareConfig:
    return PrepareConfig(
        genes=6, hr_um=25.0, factor=4, lr="visium", patch=8, stride=4,
        views=ViewConfig(tissue_px=16, cell_grid=4, tile_px=8, stain=stain),  # type: ignore[arg-type]
        split=SplitConfig(block_um=HEIGHT_UM, fractions=(1.0, 0.0, 0.0), layout="rows"),
    )  # fmt: skip


def _train(pair: VisiumPair, root: Path, stain: str) -> Any:
    store = diffst.prepare(pair.train, root / f"store_{stain}", _config(stain))
    return diffst.train(store.path, root / f"run_{stain}", "tiny", TRAIN_STEPS, progress=False)


def test_pair_is_synthetic_and_the_regions_do_not_overlap(pair: VisiumPair) -> None:
    for sample in (pair.train, pair.truth):
        assert sample.name.startswith("synthetic") and sample.platform == "synthetic"
        assert sample.metadata["synthetic"] is True
        assert sample.image is not None and sample.image.kind == "he"
    assert pair.train_extent_um[2] < pair.visium_extent_um[0]  # training right edge < Visium left
    x, y, _ = _molecules(pair.truth)
    assert x.min() >= 0 and x.max() < 400.0 and y.min() >= 0 and y.max() < HEIGHT_UM
    assert pair.truth.image is not None and pair.truth.image.shape_hw == (400, 400)


def test_visium_folder_reads_back_with_the_molecules_inside_each_spot(
    pair: VisiumPair, visium: SpatialSample
) -> None:
    spots = visium.spots
    assert visium.platform == "visium" and spots is not None
    assert spots.lattice == "hex" and spots.diameter_um == 55.0
    assert spots.pitch_um == pytest.approx(100.0, abs=1.0)
    assert spots.n_spots >= 10
    x, y, gene = _molecules(pair.truth)
    real = ~pair.truth.control[gene]
    dist, idx = cKDTree(spots.centers_um).query(np.c_[x, y][real])
    inside = dist <= 27.5
    expected = np.zeros((spots.n_spots, len(spots.genes)), np.int64)
    names = [pair.truth.genes[g] for g in gene[real][inside]]
    np.add.at(expected, (idx[inside], [spots.genes.index(n) for n in names]), 1)
    np.testing.assert_array_equal(spots.counts.toarray(), expected)


def test_the_visium_image_has_another_stain_and_the_he_image_shows_types_below_the_pitch(
    pair: VisiumPair, visium: SpatialSample
) -> None:
    assert visium.image is not None and pair.truth.image is not None
    # the hires image of the folder is the restained truth image (at half scale)
    truth = np.asarray(pair.truth.image.pixels, np.float64)
    shown = np.asarray(visium.image.pixels, np.float64).mean(axis=(0, 1))
    restained = StainShift()(np.asarray(pair.truth.image.pixels)).mean(axis=(0, 1))
    np.testing.assert_allclose(shown, restained, atol=2.0)
    assert np.abs(shown - truth.mean(axis=(0, 1))).max() > 5.0
    identity = StainShift(1.0, 1.0, RUIFROK_HAEMATOXYLIN, RUIFROK_EOSIN)
    assert np.abs(identity(np.asarray(pair.truth.image.pixels)) - truth).max() <= 1.0
    # cell types mix below the 100 µm pitch: most spots hold cells of several types
    centres = np.asarray(pair.truth.metadata["cell_centers_um"])
    types = np.asarray(pair.truth.metadata["cell_type"])
    near = cKDTree(centres).query_ball_point(visium.spots.centers_um, r=27.5)  # type: ignore[union-attr]
    assert np.mean([len(set(types[i])) >= 2 for i in near if i]) > 0.8
    # and the image shows them: nuclei of different types differ in darkness
    px = np.rint(centres / UM_PER_PX - 0.5).astype(int)
    grey = truth.mean(axis=2)[px[:, 1], px[:, 0]]
    by_type = np.array([grey[types == t].mean() for t in range(3)])
    assert np.ptp(by_type) > 20.0


def test_transcript_trained_route_predicts_and_scores_the_visium_region(
    pair: VisiumPair, visium: SpatialSample, tmp_path: Path
) -> None:
    import anndata
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    from diffst.evaluation.config import EvaluateConfig

    run = _train(pair, tmp_path, "none")
    adata = diffst.predict(
        run.checkpoint, visium, tmp_path / "pred.h5ad", sampler="ddim", steps=2, n_samples=2,
        device="cpu",
    )  # fmt: skip
    assert adata is not None
    back = anndata.read_h5ad(tmp_path / "pred.h5ad")
    assert back.n_vars == 6 and back.n_obs > 0 and np.isfinite(back.X).all()
    assert (back.X >= 0).all() and back.uns["diffst"]["lr_layout"] == "spots"
    # obsm['spatial'] is in the folder's full-resolution pixels
    xy_um = back.obs[["x_um", "y_um"]].to_numpy()
    np.testing.assert_allclose(back.obsm["spatial"], xy_um / UM_PER_PX, atol=1e-3)
    library = next(iter(back.uns["spatial"]))
    sc.pl.spatial(back, color=back.var_names[0], library_id=library, show=False)
    report = diffst.evaluate(
        tmp_path / "pred.h5ad", pair.truth, EvaluateConfig(figures=False), out_dir=tmp_path / "ev"
    )
    assert {"diffst", "nearest", "bicubic"} <= set(report.scores)
    assert report.region.scored.sum() > 100
    for name in ("diffst", "nearest", "bicubic"):
        table = report.scores[name].genes
        for metric in ("pcc", "detail_pcc"):
            value = float(np.nanmean(table[metric]))
            assert np.isfinite(value) and -1.0 <= value <= 1.0, (name, metric, value)
        assert np.isfinite(table["rmse"]).all() and (table["rmse"] >= 0).all()
    assert float(np.nanmean(report.scores["nearest"].genes["detail_pcc"])) == pytest.approx(0.0)
    assert (tmp_path / "ev" / "metrics.csv").is_file()


def test_reinhard_reference_is_recorded_and_used_by_predict(
    pair: VisiumPair, visium: SpatialSample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffst.inference.setup import checkpoint_store_meta
    from diffst.sections import views
    from diffst.sections.stain import StainStats

    run = _train(pair, tmp_path, "reinhard")
    manifest = json.loads((tmp_path / "store_reinhard" / "manifest.json").read_text())
    meta = checkpoint_store_meta(run.checkpoint)
    assert meta["views"]["stain"] == "reinhard"
    reference = StainStats.from_dict(meta["image"]["stain"]["reference"])
    assert reference == StainStats.from_dict(manifest["image"]["stain"]["reference"])
    calls: list[Any] = []
    real = views.section_stain

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(views, "section_stain", spy)
    adata = diffst.predict(
        run.checkpoint, visium, tmp_path / "pred.h5ad", sampler="ddim", steps=2, n_samples=2,
        device="cpu",
    )  # fmt: skip
    assert adata is not None and np.isfinite(adata.X).all()
    assert len(calls) == 1 and calls[0].reference == reference
    # the Visium image's own statistics differ from the training reference (another stain)
    gap = np.abs(np.subtract(calls[0].source.mean, reference.mean))
    assert gap.max() > 3.0, gap
    # the same from the command line, on the Space Ranger folder as it is
    from diffst.cli import main

    out = tmp_path / "cli.h5ad"
    rc = main(["predict", "--checkpoint", str(run.checkpoint), "--input", str(pair.visium_dir),
               "--out", str(out), "--sampler", "ddim", "--steps", "2", "--samples", "2",
               "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0 and len(calls) == 2 and calls[1].reference == reference
    import anndata

    back = anndata.read_h5ad(out)
    assert back.n_vars == adata.n_vars and back.n_obs == adata.n_obs


def test_stain_shift_needs_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        StainShift()(np.zeros((4, 4, 2), np.uint8))
    assert dataclasses.asdict(StainShift())["eosin_gain"] == 0.6
