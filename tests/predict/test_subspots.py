"""Spot-array checkpoints below the spot pitch: measured spots as LR, sub-spots k× finer as HR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch

from diffst.config import ConfigError
from diffst.data.transforms import NormStats, normalise
from diffst.datasets import visium_mini
from diffst.inference.api import predict
from diffst.inference.config import PredictConfig
from diffst.inference.setup import tile_context
from diffst.inference.subspots import subspot_inputs
from diffst.inference.tiled import tile_batch
from diffst.io.sample import InMemoryTranscripts, InputError, SpatialSample
from diffst.runs.checkpoint import load_checkpoint
from diffst.sections.spot_lattice import grid_cells, lattice_to_grid
from tests.predict.conftest import FACTOR

FAST = PredictConfig(
    steps=1, n_samples=2, batch_size=8, device="cpu", n_figure_genes=0, project_to_spots=False
)


@pytest.fixture(scope="module")
def visium() -> SpatialSample:
    return visium_mini()


@pytest.fixture(scope="module")
def spot_ckpt(make_checkpoint: Callable[..., Path], visium: SpatialSample) -> Path:
    """A spot-array checkpoint (HR = spots, LR = 4×4 pooled spots) on the fixture's Ensembl ids."""
    assert visium.spots is not None
    return make_checkpoint(list(visium.spots.gene_ids), lr="spots")


def _levels(values: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """Distinct levels of ``values`` (values within ``tol`` µm are one level), their means."""
    v = np.sort(values)
    groups = np.split(v, np.flatnonzero(np.diff(v) > tol) + 1)
    return np.array([g.mean() for g in groups])


def _meta(ckpt: Path) -> dict:
    return load_checkpoint(ckpt)["store_meta"]


def test_subspots_refine_the_hex_lattice(spot_ckpt: Path, visium: SpatialSample) -> None:
    """k×k sub-spots per spot, centred on the spot, brick rows √3/2·pitch/k apart."""
    table = visium.spots
    assert table is not None and table.lattice == "hex"
    genes = tuple(_meta(spot_ckpt)["genes"])
    inputs, frame, image = subspot_inputs(visium, genes, _meta(spot_ckpt))
    k = FACTOR
    assert frame.factor == k and frame.lattice == "hex" and image is not None
    pitch = frame.pitch_um
    assert pitch == pytest.approx(100.0, rel=0.01)
    assert inputs.tissue.sum() == table.n_spots * k * k
    rows, cols = np.nonzero(inputs.tissue)
    centres = frame.centres_um(rows, cols)
    parent = frame.parent_spots(rows, cols)
    # every spot of the table is split into exactly k×k sub-spots whose mean is its centre
    per_spot = np.bincount(parent, minlength=table.n_spots)
    assert np.array_equal(per_spot, np.full(table.n_spots, k * k))
    for s in (0, 17, table.n_spots - 1):
        np.testing.assert_allclose(centres[parent == s].mean(axis=0), table.centers_um[s], atol=2.0)
    # sub-spots of one spot: k columns pitch/k apart, k rows pitch·√3/2/k apart
    block = centres[parent == 0]
    xs, ys = _levels(block[:, 0]), _levels(block[:, 1])  # the fitted lattice is a hair rotated
    assert len(xs) == k and len(ys) == k
    np.testing.assert_allclose(np.diff(xs), pitch / k, rtol=0.02)
    np.testing.assert_allclose(np.diff(ys), pitch * np.sqrt(3) / 2 / k, rtol=0.02)
    # the sub-spots tile the slide: nearest neighbours at the sub-spot row spacing, no overlap
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(centres).query(centres, k=2)
    assert dist[:, 1].min() == pytest.approx(pitch * np.sqrt(3) / 2 / k, rel=0.05)
    # grid cell → table row is the lattice's own bijection
    cells, gframe = lattice_to_grid(table.array_coords, "hex")
    np.testing.assert_array_equal(frame.spot_index[cells[:, 0], cells[:, 1]], np.arange(len(cells)))
    np.testing.assert_array_equal(grid_cells(table.array_coords, gframe), cells)


def test_the_network_sees_each_spot_times_k_squared(spot_ckpt: Path, visium: SpatialSample) -> None:
    """The LR input of a tile is the measured spot counts × k² (the count range of training)."""
    meta = _meta(spot_ckpt)
    ctx = tile_context(meta, True, visium, FAST)
    assert ctx.count_scale == FACTOR**2 and ctx.subspots is not None
    centres, counts = ctx.inputs.spots
    pitch = ctx.subspots.pitch_um
    mid = centres[np.argmin(np.hypot(*(centres - centres.mean(axis=0)).T))]
    r0, c0 = int(mid[1] // pitch) - 1, int(mid[0] // pitch) - 1  # a tile inside the tissue
    origin = np.array([[r0 * FACTOR, c0 * FACTOR]])
    batch = tile_batch(ctx, origin, device=torch.device("cpu"))
    lr = batch["lr"][0].numpy()
    mask = batch["lr_mask"][0, 0].numpy() > 0
    p = ctx.lr_size
    expected = np.zeros((len(meta["genes"]), p, p))
    hit = np.zeros((p, p), dtype=bool)
    for (x, y), row in zip(centres, counts, strict=True):
        r, c = int(y // pitch) - r0, int(x // pitch) - c0
        if 0 <= r < p and 0 <= c < p:
            expected[:, r, c] = row * FACTOR**2
            hit[r, c] = True
    assert hit[1, 1]  # (the fixture's 100 spots are scattered over a whole slide)
    np.testing.assert_array_equal(mask, hit)
    norm = NormStats.from_dict(meta["normalisation"])
    want = normalise(np.zeros((len(meta["genes"]), 1, 1)), expected.astype(np.float32), norm)[1]
    np.testing.assert_allclose(lr[:, hit], want[:, hit], rtol=1e-5, atol=1e-6)


def test_predict_below_the_pitch_writes_sub_spots(
    spot_ckpt: Path, visium: SpatialSample, tmp_path: Path
) -> None:
    from dataclasses import replace

    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    table = visium.spots
    assert table is not None
    out = tmp_path / "sub.h5ad"
    adata = predict(spot_ckpt, visium, out, replace(FAST, project_to_spots=True), library_id="v")
    assert adata is not None
    back = anndata.read_h5ad(out)
    k = FACTOR
    assert back.n_obs == table.n_spots * k * k
    assert back.var_names[0].startswith("ENSG")
    info = back.uns["diffst"]
    assert info["units"] == "counts per sub-spot"
    below = info["below_pitch"]
    assert below["factor"] == k and below["count_scale"] == k * k
    assert "one scale below the training data" in below["statement"]
    assert f"{k}×{k} sub-spots" in below["statement"]
    # the projection makes every spot's sub-spots re-aggregate to the measured spot exactly
    by_spot = back.obs.groupby("spot", observed=True).indices
    sums = np.stack([np.asarray(back.X[ix]).sum(axis=0) for ix in by_spot.values()])
    rows = [table.ids.index(s) for s in by_spot]
    np.testing.assert_allclose(sums, table.counts[rows].toarray(), rtol=1e-3, atol=1e-3)
    assert info["spot_consistency"]["n_spots"] == table.n_spots
    # positions: full-resolution pixels through the reader's scale factors, µm in obs
    fullres = float(visium.metadata["um_per_px_fullres"])
    xy_um = back.obs[["x_um", "y_um"]].to_numpy()
    np.testing.assert_allclose(back.obsm["spatial"], xy_um / fullres, rtol=1e-6)
    scal = back.uns["spatial"]["v"]["scalefactors"]
    assert scal["spot_diameter_fullres"] == pytest.approx(100.0 / k / fullres, rel=0.02)
    sc.pl.spatial(back, color=back.var_names[0], library_id="v", show=False)


def test_unprojected_output_is_counts_per_sub_spot(
    spot_ckpt: Path, visium: SpatialSample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts the network returns (at the scale of k² × a spot) come back divided by k²."""
    import torch

    import diffst.data.transforms as transforms

    calls: list[int] = []

    def constant(x: torch.Tensor, norm: object) -> torch.Tensor:
        calls.append(1)
        return torch.full_like(x, 8.0)

    monkeypatch.setattr(transforms, "inverse_normalise", constant)  # read by sample_tiles
    adata = predict(spot_ckpt, visium, tmp_path / "c.h5ad", FAST)
    assert adata is not None and calls
    np.testing.assert_allclose(adata.X, 8.0 / FACTOR**2, rtol=1e-6)
    assert not adata.uns["diffst"]["spot_consistency"]["projected"]


def test_spot_array_options_refused_before_compute(
    spot_ckpt: Path, visium: SpatialSample, tmp_path: Path
) -> None:
    from dataclasses import replace

    import diffst

    with pytest.raises(ConfigError, match="region"):
        predict(spot_ckpt, visium, tmp_path / "r.h5ad", replace(FAST, region_um=(0, 0, 500, 500)))
    cells = tmp_path / "cells.csv"
    cells.write_text("cell_id,vertex_x,vertex_y\n")
    with pytest.raises(ConfigError, match="--cells"):
        diffst.predict(spot_ckpt, visium, tmp_path / "c.h5ad", cells=cells, config=FAST)
    assert visium.spots is not None
    genes = visium.spots.gene_ids
    molecules = InMemoryTranscripts(
        np.array([7000.0]), np.array([7000.0]), np.array([0], dtype=np.int32), genes,
        np.zeros(len(genes), dtype=bool),
    )  # fmt: skip
    no_spots = SpatialSample("t", "xenium", image=visium.image, transcripts=molecules)
    with pytest.raises(InputError, match="no spot table"):
        predict(spot_ckpt, no_spots, tmp_path / "t.h5ad", FAST)
    assert not any(p.suffix == ".h5ad" for p in tmp_path.iterdir())


def test_cli_predicts_sub_spots(
    spot_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffst.cli import main

    out = tmp_path / "cli.h5ad"
    rc = main(["predict", "--checkpoint", str(spot_ckpt), "--input", "visium_mini",
               "--out", str(out), "--steps", "1", "--samples", "2", "--no-progress"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1600 sub-spots" in printed and "one scale below its training data" in printed
    assert anndata.read_h5ad(out).uns["diffst"]["below_pitch"]["factor"] == FACTOR


@pytest.fixture(scope="module")
def synthetic_visium(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SpatialSample, SpatialSample]:
    """A synthetic section (labelled synthetic) and its Visium files read back: (spots, truth)."""
    from diffst.io.visium import read_visium
    from diffst.synthetic import simulate_tissue, write_spaceranger_outs

    truth = simulate_tissue(
        width_um=900.0, height_um=800.0, n_genes=6, n_cell_types=3, um_per_px=4.0,
        cell_diameter_um=20.0, counts_per_cell=30.0, seed=3,
    )  # fmt: skip
    out = write_spaceranger_outs(truth, tmp_path_factory.mktemp("vis") / "outs")
    return read_visium(out), truth


def test_score_subspots_against_the_transcripts(
    make_checkpoint: Callable[..., Path],
    synthetic_visium: tuple[SpatialSample, SpatialSample],
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from diffst.evaluation.subspots import score_subspots, subspot_figure

    section, truth = synthetic_visium
    assert section.spots is not None
    genes = list(section.spots.genes[:6])
    ckpt = make_checkpoint(genes, lr="spots")
    adata = predict(ckpt, section, tmp_path / "s.h5ad", replace(FAST, project_to_spots=True))
    assert adata is not None
    scores = score_subspots(adata, section, truth, n_splits=2)
    assert scores.factor == FACTOR and scores.n_subspots == adata.n_obs
    summary = scores.summary()
    assert set(summary) == {"diffst", "nearest", "cubic", "ceiling"}
    # nearest has no detail below the spot by construction; interpolation has some
    np.testing.assert_array_equal(
        scores.detail_pcc["nearest"][np.isfinite(scores.detail_pcc["nearest"])], 0.0
    )
    for method in ("diffst", "cubic"):
        assert np.isfinite(scores.pcc[method]).all()
        assert (np.abs(scores.pcc[method]) <= 1).all()
    # spots follow the tissue: every method correlates with the truth across sub-spots
    assert summary["nearest"]["pcc"] > 0.3 and summary["cubic"]["pcc"] > 0.3
    assert 0 < summary["ceiling"]["pcc"] <= 1
    # the kept values re-aggregate to the spots (projected methods) and draw as a figure
    assert scores.values["truth"].shape == (6, adata.n_obs)
    spot = adata.obs["spot"].to_numpy()
    for method in ("nearest", "cubic"):
        sums = pd.Series(scores.values[method][0]).groupby(spot).sum()
        row = {s: i for i, s in enumerate(section.spots.ids)}
        measured = section.spots.counts[[row[s] for s in sums.index], 0].toarray().ravel()
        np.testing.assert_allclose(sums.to_numpy(), measured, rtol=1e-9, atol=1e-9)
    path = subspot_figure(scores, tmp_path / "fig" / "subspots.png", genes[:2])
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "fig").glob(".*tmp*"))
    with pytest.raises(ValueError, match="not in the scores"):
        subspot_figure(scores, tmp_path / "x.png", ["no_such_gene"])
