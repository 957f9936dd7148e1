"""evaluate(): prediction AnnData + store split → scores, tables, figures; mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from diffst.config import ConfigError
from diffst.evaluation.api import evaluate, load_prediction
from diffst.evaluation.config import EvaluateConfig
from diffst.geometry import GeometryError
from diffst.io.sample import InputError
from diffst.metrics import pool_sum

GENES = ("Gad1", "Slc17a7", "Mbp")
GEOMETRY = {"origin_um": [10.0, 20.0], "hr_um": 5.0, "factor": 4, "shape_hr": [16, 24]}
P = 8


def _truth_grid(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:24]
    base = np.stack([np.sin(xx / 3.0) + 1.5, np.cos(yy / 2.0) + 1.5, (xx + yy) / 20 + 0.2])
    return rng.poisson(3 * base).astype(np.int32)


def _write_store(root: Path, hr_grid: np.ndarray) -> None:
    origins = [(0, 0), (0, 8), (8, 16)]  # (row, col) bins of the test patches
    hr = np.stack([hr_grid[:, r : r + P, c : c + P] for r, c in origins])
    split = root / "test"
    split.mkdir(parents=True)
    np.save(split / "hr.npy", hr)
    np.save(split / "lr.npy", np.stack([pool_sum(x, 4) for x in hr]).astype(np.float32))
    mask = np.ones((3, P, P), dtype=np.uint8)
    mask[0, :2, :2] = 0
    np.save(split / "mask.npy", mask)
    np.save(split / "lr_mask.npy", np.ones((3, 2, 2), dtype=np.uint8))
    x0, y0 = GEOMETRY["origin_um"]
    np.save(split / "origin_um.npy", np.array([[x0 + c * 5.0, y0 + r * 5.0] for r, c in origins]))
    (root / "manifest.json").write_text(json.dumps({"genes": list(GENES), "geometry": GEOMETRY}))


def _prediction(hr_grid: np.ndarray, genes=GENES, geometry=GEOMETRY, noise=0.5) -> ad.AnnData:
    rng = np.random.default_rng(1)
    mean = hr_grid + rng.normal(0, noise, hr_grid.shape)
    rows, cols = np.nonzero(np.ones(hr_grid.shape[1:], dtype=bool))
    x = mean[:, rows, cols].T.astype(np.float32)
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(
            {"bin_row": rows, "bin_col": cols}, index=[f"b{i}" for i in range(len(rows))]
        ),
        var=pd.DataFrame(index=list(genes)),
        layers={"std": np.full_like(x, 1.0), "q05": x - 1.6, "q95": x + 1.6},
    )
    adata.uns["diffst"] = {"geometry": geometry}
    return adata


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    _write_store(tmp_path / "store", _truth_grid())
    return tmp_path / "store"


def test_evaluate_writes_tables_and_figures(store: Path, tmp_path: Path) -> None:
    pred = _prediction(_truth_grid())
    path = tmp_path / "pred.h5ad"
    pred.write_h5ad(path)
    rep = evaluate(path, store, EvaluateConfig(figure_genes=2), out_dir=tmp_path / "rep")
    for key in ("metrics", "per_gene", "report", "gene_maps", "metric_bars", "calibration"):
        assert rep.files[key].is_file(), key
    assert set(rep.scores) == {"diffst", "nearest", "bicubic"}
    diffst = rep.scores["diffst"].genes
    assert (diffst["pcc"] > 0.8).all()  # small noise on the truth
    assert diffst["coverage90"].between(0.8, 1.0).all()
    # the nearest baseline re-aggregates exactly to the LR input
    np.testing.assert_allclose(rep.scores["nearest"].genes["spot_consistency"], 1.0)
    table = pd.read_csv(rep.files["metrics"])
    assert {"method", "metric", "mean", "median", "n_defined", "n_nan"} <= set(table.columns)
    text = rep.files["report"].read_text()
    assert "Headline table" in text and "figures/gene_maps.png" in text
    assert "PCC paper" in text


def test_store_split_folder_is_accepted(store: Path) -> None:
    rep = evaluate(_prediction(_truth_grid()), store / "test", out_dir=None)
    assert rep.region.hr.shape == (3, 16, 24) and rep.region.n_patches == 3
    # three patches, 4 bins masked in one: each scored bin counted once
    assert rep.region.scored.sum() == 3 * P * P - 4
    assert rep.files == {}


def test_patches_off_the_lr_grid_are_refused(store: Path) -> None:
    origin = np.load(store / "test" / "origin_um.npy")
    origin[1, 0] += 2 * GEOMETRY["hr_um"]  # two bins: between LR cells of factor 4
    np.save(store / "test" / "origin_um.npy", origin)
    with pytest.raises(InputError, match="start between LR cells"):
        evaluate(_prediction(_truth_grid()), store, out_dir=None)


def test_gene_mismatch_lists_genes(store: Path) -> None:
    pred = _prediction(_truth_grid(), genes=("Gad1", "Slc17a7", "Pvalb"))
    with pytest.raises(GeometryError, match=r"genes differ.*Mbp.*Pvalb"):
        evaluate(pred, store, out_dir=None)


def test_geometry_mismatch_lists_every_difference(store: Path) -> None:
    geo = dict(GEOMETRY, hr_um=4.0, factor=2)
    with pytest.raises(GeometryError, match=r"HR bin side 4.0 µm vs 5.0 µm; LR factor 2 vs 4"):
        evaluate(_prediction(_truth_grid(), geometry=geo), store, out_dir=None)


def test_prediction_without_geometry_is_rejected(store: Path) -> None:
    pred = _prediction(_truth_grid())
    del pred.uns["diffst"]
    with pytest.raises(InputError, match=r"uns\['diffst'\]\['geometry'\]"):
        load_prediction(pred)
    with pytest.raises(InputError, match="not found"):
        load_prediction(store / "missing.h5ad")


def test_uncovered_truth_is_an_error(store: Path) -> None:
    pred = _prediction(_truth_grid())
    pred = pred[~((pred.obs.bin_row < 4) & (pred.obs.bin_col > 10))].copy()
    with pytest.raises(GeometryError, match=r"does not cover 20 of the 188 scored bins"):
        evaluate(pred, store, out_dir=None)


def test_grids_offset_by_whole_bins_are_aligned(store: Path) -> None:
    grid = _truth_grid() + np.random.default_rng(3).normal(0, 0.5, (3, 16, 24))
    shifted = np.pad(grid, ((0, 0), (0, 0), (2, 0)))  # two more bin columns on the left
    geo = dict(GEOMETRY, origin_um=[0.0, 20.0], shape_hr=[16, 26])
    base = evaluate(_prediction(grid, noise=0), store, out_dir=None).scores["diffst"].genes
    moved = evaluate(_prediction(shifted, geometry=geo, noise=0), store, out_dir=None)
    pd.testing.assert_frame_equal(moved.scores["diffst"].genes, base)


def test_fractional_grid_offset_is_an_error(store: Path) -> None:
    geo = dict(GEOMETRY, origin_um=[12.5, 20.0])
    with pytest.raises(GeometryError, match="fraction of a bin"):
        evaluate(_prediction(_truth_grid(), geometry=geo), store, out_dir=None)


def _sample_from_grid(grid: np.ndarray):
    from diffst.io.sample import InMemoryTranscripts, SpatialSample

    g, i, j = np.nonzero(grid)
    reps = grid[g, i, j]
    x0, y0 = GEOMETRY["origin_um"]
    x = np.repeat(x0 + (j + 0.5) * 5.0, reps)
    y = np.repeat(y0 + (i + 0.5) * 5.0, reps)
    genes = (*GENES, "Blank-1")
    source = InMemoryTranscripts(
        x, y, np.repeat(g, reps).astype(np.int32), genes, np.array([False, False, False, True])
    )
    return SpatialSample("synthetic", "merfish", transcripts=source)


def test_sample_truth_is_binned_on_the_prediction_grid(tmp_path: Path) -> None:
    grid = _truth_grid()
    pred = _prediction(grid)
    pred.uns["diffst"]["tiles"] = {"patch_bins": P}
    rep = evaluate(pred, _sample_from_grid(grid), out_dir=None)
    assert rep.region.n_patches == 6 and rep.region.scored.all()
    np.testing.assert_array_equal(rep.region.hr, grid)
    np.testing.assert_array_equal(rep.region.lr, pool_sum(grid, 4))
    assert rep.scores["diffst"].genes["pcc"].gt(0.8).all()
    del pred.uns["diffst"]["tiles"]
    with pytest.raises(ConfigError, match="patch size is not recorded"):
        evaluate(pred, _sample_from_grid(grid), out_dir=None)
    rep = evaluate(pred, _sample_from_grid(grid), EvaluateConfig(patch_bins=16), out_dir=None)
    assert rep.region.n_patches == 2 and rep.region.scored.sum() == 16 * 24
