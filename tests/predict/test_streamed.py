"""Streamed prediction (diffst.inference.streamed): block by block into the h5ad, with the values
of a whole-section run; LR cell counts binned without the HR map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anndata
import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.inference.api import predict
from diffst.inference.config import PredictConfig
from diffst.inference.streamed import (
    block_tiles,
    dense_stats_gib,
    plan_blocks,
    should_stream,
)
from diffst.inference.tiled import TileAccumulator, blend_window, select_tiles, tile_origins
from diffst.inference.to_anndata import read_prediction
from diffst.io.sample import SpatialSample
from diffst.sections.binning import bin_transcripts_with_stats, pool_grid
from diffst.sections.inputs import checkpoint_section_inputs
from diffst.synthetic import simulate_tissue

from .conftest import store_meta

HR = 10.0
GENES = [f"Gene00{k}" for k in range(6)]
# one tile per network call: both runs then evaluate every tile alone, and their values agree
# bit for bit (a tile batched with other tiles differs in the last bits of float32 arithmetic)
FAST = PredictConfig(steps=1, n_samples=2, batch_size=1, device="cpu", n_figure_genes=0)
TINY_BLOCKS = 1e-6  # GiB: blocks of one tile stride


@pytest.fixture(scope="module")
def section() -> SpatialSample:
    return simulate_tissue(width_um=400.0, height_um=400.0, n_genes=6, um_per_px=2.0, seed=3)


def test_blocks_tile_the_grid_on_whole_strides_within_the_budget() -> None:
    blocks = plan_blocks((100, 70), 2000, 12, 0.01)
    side = blocks[0][2] - blocks[0][0]
    assert side % 12 == 0 and side >= 12
    assert (20 * 2000 + 24) * side**2 <= 0.01 * 2**30
    cover = np.zeros((100, 70), int)
    for r0, c0, r1, c1 in blocks:
        cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all()
    assert plan_blocks((100, 70), 2000, 12, 1e-9)[0][2] == 12  # never below one stride
    assert len(plan_blocks((100, 70), 1, 12, 1.0)) == 1


def test_streaming_is_chosen_by_the_size_of_the_whole_section_statistics() -> None:
    assert dense_stats_gib(2000, (1000, 1000)) == pytest.approx(20 * 2000 * 1e6 / 2**30)
    cfg = PredictConfig(block_gib=1.0)
    assert should_stream(cfg, 2000, (1000, 1000)) and not should_stream(cfg, 10, (100, 100))
    assert should_stream(replace(cfg, stream="on"), 10, (100, 100))
    assert not should_stream(replace(cfg, stream="off"), 2000, (1000, 1000))
    with pytest.raises(ConfigError, match="stream"):
        PredictConfig(stream="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="block_gib"):
        PredictConfig(block_gib=0)


def test_block_tiles_are_the_tiles_holding_a_tissue_bin_of_the_block() -> None:
    rng = np.random.default_rng(0)
    tissue = rng.random((37, 29)) < 0.3
    origins = tile_origins(tissue, 8, 4)
    integral = np.pad(np.cumsum(np.cumsum(tissue, 0), 1), ((1, 0), (1, 0)))
    for block in plan_blocks(tissue.shape, 1, 4, 400 * 44 / 2**30):
        region = np.zeros_like(tissue)
        r0, c0, r1, c1 = block
        region[r0:r1, c0:c1] = tissue[r0:r1, c0:c1]
        expected = select_tiles(origins, 8, region)
        np.testing.assert_array_equal(block_tiles(origins, 8, integral, block), expected)


def test_block_accumulators_equal_one_section_accumulator() -> None:
    rng = np.random.default_rng(2)
    h, w, p = 20, 18, 8
    tiles = [
        ((r, c), rng.normal(size=(2, 1, p, p))) for r in range(0, h, 4) for c in range(0, w, 4)
    ]
    whole = TileAccumulator((2, 1), (h, w), blend_window(p), central=(1,))
    for k, (o, t) in enumerate(tiles):
        whole.add(o, t, k)
    ref = whole.result()
    out = np.full_like(ref, np.nan)
    for r0, c0, r1, c1 in plan_blocks((h, w), 1, 4, 48 * 44 / 2**30):
        acc = TileAccumulator((2, 1), (r1 - r0, c1 - c0), blend_window(p), central=(1,),
                              origin=(r0, c0))  # fmt: skip
        for k, ((r, c), t) in enumerate(tiles):
            if r < r1 and r + p > r0 and c < c1 and c + p > c0:
                acc.add((r, c), t, k)
        out[..., r0:r1, c0:c1] = acc.result()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_a_reset_accumulator_equals_a_new_one() -> None:
    rng = np.random.default_rng(3)
    tile = rng.normal(size=(2, 1, 8, 8))
    used = TileAccumulator((2, 1), (12, 12), blend_window(8), central=(1,))
    used.add((0, 0), rng.normal(size=(2, 1, 8, 8)), 0)
    used.result(in_place=True)
    used.reset((4, 6), (10, 7))
    fresh = TileAccumulator((2, 1), (10, 7), blend_window(8), central=(1,), origin=(4, 6))
    for acc in (used, fresh):
        acc.add((2, 2), tile, 3)
        acc.add((6, 6), tile, 1)
    np.testing.assert_array_equal(used.result()[..., :10, :7], fresh.result())
    with pytest.raises(ValueError, match="exceeds"):
        used.reset((0, 0), (13, 1))


def test_lr_cells_binned_without_the_hr_map(section: SpatialSample) -> None:
    meta = store_meta(GENES, "grid", hr_um=HR)
    full = checkpoint_section_inputs(section, tuple(GENES), meta)
    light = checkpoint_section_inputs(section, tuple(GENES), meta, hr_map=False)
    assert light.hr is None and full.hr is not None and light.lr_grid is not None
    np.testing.assert_array_equal(light.lr_grid, pool_grid(full.hr, 4))
    np.testing.assert_array_equal(light.spot_counts, full.spot_counts)
    np.testing.assert_array_equal(light.tissue, full.tissue)
    for r, c in ((0, 0), (12, 24), (28, 28), (36, 36)):
        a, am = light.lr_window(r, c, 16)
        b, bm = full.lr_window(r, c, 16)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(am, bm)
    with pytest.raises(ValueError, match="whole LR cells"):
        light.lr_window(2, 0, 16)
    np.testing.assert_array_equal(light.lr_section()[0], full.lr_section()[0])
    assert section.transcripts is not None
    pooled, stats, _ = bin_transcripts_with_stats(
        section.transcripts, tuple(GENES), full.geometry, pool=4
    )
    np.testing.assert_array_equal(pooled, pool_grid(full.hr, 4))
    assert stats.kept == int(full.hr.sum())


def _by_bin(adata: anndata.AnnData) -> anndata.AnnData:
    order = np.lexsort((adata.obs["bin_col"].to_numpy(), adata.obs["bin_row"].to_numpy()))
    return adata[order].copy()


@pytest.mark.parametrize("lr", ["grid", "visium"])
def test_streamed_prediction_equals_the_whole_section_one(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path, lr: str
) -> None:
    ckpt = make_checkpoint(GENES, lr=lr, hr_um=HR)
    dense = predict(ckpt, section, tmp_path / "dense.h5ad", replace(FAST, stream="off"))
    cfg = replace(FAST, stream="on", block_gib=TINY_BLOCKS)
    frame = predict(ckpt, section, tmp_path / "streamed.h5ad", cfg)
    assert dense is not None and frame is not None
    assert frame.X is None and frame.n_obs == dense.n_obs and frame.n_vars == dense.n_vars
    info = frame.uns["diffst"]["streamed"]
    assert info["blocks"] > 4 and info["rerun_share"] > 0
    on_disk = anndata.read_h5ad(tmp_path / "streamed.h5ad")  # a plain h5ad
    assert set(on_disk.obs_names) == set(dense.obs_names)
    a, b = _by_bin(on_disk), _by_bin(dense)
    np.testing.assert_array_equal(a.obs_names, b.obs_names)
    np.testing.assert_array_equal(a.X, b.X)
    for key in ("std", "q05", "q95", "sample_mean"):
        np.testing.assert_array_equal(a.layers[key], b.layers[key])
    np.testing.assert_allclose(a.obsm["spatial"], b.obsm["spatial"])
    for col in ("predicted_counts", "mean_std", "spot_pcc", "lr_counts"):
        np.testing.assert_allclose(a.var[col], b.var[col], rtol=1e-5)
    ra, rb = a.uns["diffst"]["spot_consistency"], b.uns["diffst"]["spot_consistency"]
    assert ra["n_spots"] == rb["n_spots"] and bool(ra["projected"]) and bool(rb["projected"])
    assert ra["total_ratio"] == pytest.approx(rb["total_ratio"], rel=1e-5)
    assert set(a.uns["spatial"]) == set(b.uns["spatial"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_read_prediction_reads_chosen_genes_in_order(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    cfg = replace(FAST, stream="on", block_gib=TINY_BLOCKS, project_to_spots=False)
    predict(ckpt, section, tmp_path / "s.h5ad", cfg)
    whole = anndata.read_h5ad(tmp_path / "s.h5ad")
    part = read_prediction(tmp_path / "s.h5ad", ["Gene004", "Gene001", "Gene004"])
    assert list(part.var_names) == ["Gene004", "Gene001", "Gene004"]
    np.testing.assert_array_equal(part.X, whole[:, [4, 1, 4]].X)
    np.testing.assert_array_equal(part.layers["q95"], whole.layers["q95"][:, [4, 1, 4]])
    assert "spatial" in part.obsm and "diffst" in part.uns
    bare = read_prediction(tmp_path / "s.h5ad", ["Gene000"], layers=False)
    assert not bare.layers
    with pytest.raises(KeyError, match="Nope"):
        read_prediction(tmp_path / "s.h5ad", ["Nope"])


def test_streaming_refuses_what_needs_the_whole_prediction_before_any_compute(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    with pytest.raises(ConfigError, match="--cells"):
        predict(ckpt, section, tmp_path / "c.h5ad", replace(FAST, stream="on"), in_memory=True)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_streamed_run_leaves_no_file(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import diffst.inference.streamed as streamed

    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        raise RuntimeError("disk full")

    monkeypatch.setattr(streamed, "_finish_values", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        predict(ckpt, section, tmp_path / "f.h5ad", replace(FAST, stream="on"))
    assert calls["n"] == 1 and list(tmp_path.iterdir()) == []


def test_uncertainty_for_chosen_genes_only_is_the_same_in_both_modes(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    chosen = ("Gene003", "Gene000")
    full = predict(ckpt, section, tmp_path / "full.h5ad", replace(FAST, stream="off"))
    cfg = replace(FAST, uncertainty_genes=chosen)
    dense = predict(ckpt, section, tmp_path / "dense.h5ad", replace(cfg, stream="off"))
    predict(ckpt, section, tmp_path / "s.h5ad", replace(cfg, stream="on", block_gib=TINY_BLOCKS))
    assert full is not None and dense is not None
    assert not dense.layers and list(dense.obsm["q95"].columns) == list(chosen)
    np.testing.assert_array_equal(dense.X, full.X)
    np.testing.assert_array_equal(
        dense.obsm["std"]["Gene000"], full[:, "Gene000"].layers["std"][:, 0]
    )
    assert list(dense.uns["diffst"]["uncertainty"]["genes"]) == list(chosen)
    assert np.isnan(dense.var.loc["Gene001", "mean_std"])
    streamed = _by_bin(anndata.read_h5ad(tmp_path / "s.h5ad"))
    dense = _by_bin(dense)
    assert not streamed.layers
    np.testing.assert_array_equal(streamed.X, dense.X)
    for key in ("std", "q05", "q95", "sample_mean"):
        assert list(streamed.obsm[key].columns) == list(chosen)
        np.testing.assert_array_equal(streamed.obsm[key].to_numpy(), dense.obsm[key].to_numpy())
    np.testing.assert_allclose(streamed.var["mean_std"], dense.var["mean_std"], rtol=1e-5)
    none = predict(ckpt, section, tmp_path / "n.h5ad", replace(FAST, uncertainty_genes=()))
    assert none is not None and not none.layers and "std" not in none.obsm


def test_predict_cli_streams_the_bundled_crop_with_chosen_uncertainty(
    make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffst.api import read_prediction as public_read
    from diffst.cli import main

    genes = ["Slc17a7", "Gfap", "Gabbr1", "Cx3cl1"]
    ckpt = make_checkpoint(genes, lr="grid", channels=2, hr_um=HR)
    out = tmp_path / "pred.h5ad"
    code = main([
        "predict", "--checkpoint", str(ckpt), "--input", "merfish_mini", "--out", str(out),
        "--image-channels", "DAPI", "polyT", "--steps", "1", "--samples", "2", "--device", "cpu",
        "--no-progress", "--stream", "on", "--block-gib", "0.00005", "--uncertainty-genes", "Gfap",
        "--figures", str(tmp_path / "fig"),
    ])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "streamed in" in printed.out and "blocks" in printed.out
    adata = public_read(out, ["Gfap", "Slc17a7"])
    assert list(adata.var_names) == ["Gfap", "Slc17a7"] and list(adata.obsm["q05"].columns) == [
        "Gfap"
    ]
    assert adata.uns["diffst"]["streamed"]["blocks"] > 1
    assert (adata.obsm["q05"]["Gfap"] <= adata.obsm["q95"]["Gfap"] + 1e-6).all()
    assert len(list((tmp_path / "fig").glob("*.png"))) >= 1
    refused = main([
        "predict", "--checkpoint", str(ckpt), "--input", "merfish_mini", "--out",
        str(tmp_path / "c.h5ad"), "--image-channels", "DAPI", "polyT", "--device", "cpu",
        "--stream", "on", "--cells", str(tmp_path / "none.geojson"),
    ])  # fmt: skip
    assert refused == 2
