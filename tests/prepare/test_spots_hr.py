"""Spot arrays as the HR map: grid, masks, pooling, pitch checks, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable, TissueMask
from diffst.preparation.spots.api import LR_SPOTS_FILE, SECTION_FILE, prepare_multi
from diffst.preparation.spots.patches import spot_patches
from diffst.sections.config import PrepareConfig, SplitConfig, SpotHRConfig, ViewConfig
from diffst.sections.spot_grid import (
    SPOT_IN_TISSUE,
    fit_lattice_to_um,
    pool_spots,
    spot_grid,
)
from tests.prepare.spot_sections import write_sections

POISON = 1_000_000


def _square_sample(
    pitch_um: float = 200.0,
    *,
    shape: tuple[int, int] = (6, 7),
    seed: int = 0,
    stated: bool = True,
    table_pitch: float | None = 200.0,
    counts: np.ndarray | None = None,
) -> SpatialSample:
    """Legacy-ST-like sample: square lattice, offset array coordinates, one spot missing."""
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    rc = np.stack([r.ravel() + 2, c.ravel() + 5], axis=1)[1:]  # spot (2, 5) not measured
    n = rc.shape[0]
    if counts is None:
        counts = rng.poisson(4.0, size=(n, 3)).astype(np.float64)
    centres = np.stack([rc[:, 1] * pitch_um + 30.0, rc[:, 0] * pitch_um + 50.0], axis=1)
    table = SpotTable(
        counts=sp.csr_matrix(counts),
        genes=("A", "B", "C"),
        centers_um=centres,
        diameter_um=100.0,
        ids=tuple(f"{x}x{y}" for y, x in rc),
        array_coords=rc,
        lattice="square",
        pitch_um=table_pitch,
    )
    image = SpatialImage(
        np.zeros((64, 64, 3), np.uint8), ("R", "G", "B"), AffineTransform.from_pixel_size(40.0)
    )
    meta = {} if stated else {"um_per_px_stated": False}
    return SpatialSample("sq", "legacy_st", image=image, spots=table, metadata=meta)


def test_pool_spots_hand_computed_and_masked_cells_never_enter() -> None:
    hr = np.array([[[1, 2, 3], [4, POISON, 6], [7, 8, 9]]])
    measured = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=bool)
    pooled = pool_spots(hr, measured, 2)
    np.testing.assert_array_equal(pooled.lr[0], [[1 + 2 + 4, 3 + 6], [8, 9]])
    np.testing.assert_array_equal(pooled.n_spots, [[3, 2], [1, 1]])
    assert pooled.lr_mask.all()
    # a block of unmeasured spots is masked out of the LR map
    corners = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    pooled3 = pool_spots(hr, corners, 2)
    np.testing.assert_array_equal(pooled3.lr[0], [[1, 0], [0, 9]])
    np.testing.assert_array_equal(pooled3.n_spots, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(pooled3.lr_mask, [[True, False], [False, True]])
    assert pooled3.lr.max() < POISON


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_square_grid_pooled_counts_equal_sums_of_measured_spots(factor: int) -> None:
    sample = _square_sample()
    grid = spot_grid(
        sample, ("A", "C"), SpotHRConfig(factor=factor, patch=4 * factor, stride=factor)
    )
    table = sample.spots
    assert table is not None
    assert grid.hr.shape == (2, 6, 7) and grid.frame.origin_rc == (2, 5)
    assert not grid.measured[0, 0] and grid.measured.sum() == table.n_spots
    dense = table.counts.toarray()
    # every spot lands on its own cell: grid cell (row-2, col-5)
    for k in range(table.n_spots):
        r, c = table.array_coords[k] - (2, 5)
        np.testing.assert_array_equal(grid.hr[:, r, c], dense[k, [0, 2]])
    pooled = pool_spots(grid.hr, grid.measured, factor)
    for a in range(pooled.lr.shape[1]):
        for b in range(pooled.lr.shape[2]):
            rows = (table.array_coords[:, 0] - 2) // factor == a
            cols = (table.array_coords[:, 1] - 5) // factor == b
            np.testing.assert_array_equal(pooled.lr[:, a, b], dense[rows & cols][:, [0, 2]].sum(0))
            assert pooled.n_spots[a, b] == (rows & cols).sum()
    assert pooled.lr.sum() == dense[:, [0, 2]].sum()
    assert grid.counts_summary["spots_measured"] == table.n_spots
    assert grid.pitch_um == pytest.approx(200.0)


def test_poisoned_spot_outside_tissue_never_enters_hr_or_lr() -> None:
    counts = np.full((41, 3), 2.0)
    counts[7] = POISON  # spot 7 lies outside the tissue mask below
    sample = _square_sample(counts=counts)
    table = sample.spots
    assert table is not None
    mask_px = np.ones((64, 64), dtype=bool)
    col, row = np.floor(sample.image.um_to_px.apply(table.centers_um[7:8]))[0].astype(int)
    mask_px[row, col] = False
    sample.tissue_mask = TissueMask(mask_px, sample.image.um_to_px)
    grid = spot_grid(sample, ("A", "B", "C"), SpotHRConfig())
    r, c = table.array_coords[7] - (2, 5)
    assert not grid.measured[r, c] and grid.hr.max() < POISON
    assert grid.counts_summary["spots_outside_tissue"] == 1
    assert grid.counts_summary["counts_dropped"] == 3 * POISON
    assert pool_spots(grid.hr, grid.measured, 2).lr.max() < POISON


def test_low_count_spots_masked_and_reported() -> None:
    counts = np.full((41, 3), 3.0)
    counts[[3, 10]] = [[1, 0, 0], [0, 1, 1]]
    grid = spot_grid(_square_sample(counts=counts), ("A",), SpotHRConfig(min_spot_counts=3))
    assert grid.counts_summary["spots_low_count"] == 2
    assert grid.counts_summary["spots_measured"] == 39 == grid.measured.sum()


def test_pitch_disagreement_is_an_error_and_small_deviation_passes() -> None:
    with pytest.raises(GeometryError, match=r"150 µm but .*200 µm \(25% apart"):
        spot_grid(_square_sample(150.0), ("A",), SpotHRConfig())
    with pytest.raises(GeometryError, match=r"spots\.pitch_um says 100"):
        spot_grid(_square_sample(), ("A",), SpotHRConfig(pitch_um=100.0))
    grid = spot_grid(_square_sample(190.0), ("A",), SpotHRConfig())
    assert grid.pitch_um == 200.0


def test_unstated_pixel_size_is_derived_from_the_pitch_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the reader assumed 1 µm = 1 image unit; spots are 5 px apart on a 40 µm/px image → 200 µm
    sample = _square_sample(5.0, stated=False, table_pitch=None)
    with caplog.at_level(logging.WARNING):
        grid = spot_grid(sample, ("A",), SpotHRConfig())
    assert "assumed a spot pitch of 200 µm" in caplog.text
    assert grid.image is not None and grid.image.um_per_px == pytest.approx(40.0 * 40.0)
    centres = grid.cell_centres_um(np.array([[0, 1], [1, 1]]))
    np.testing.assert_allclose(np.diff(centres, axis=0), [[0.0, 200.0]])


def test_hex_lattice_sample() -> None:
    r, c = np.meshgrid(np.arange(5), np.arange(10), indexing="ij")
    keep = (r + c) % 2 == 0
    rc = np.stack([r[keep], c[keep]], axis=1)
    x = rc[:, 1] * 50.0 + 500.0
    y = rc[:, 0] * 100.0 * np.sqrt(3) / 2 + 300.0
    counts = np.arange(rc.shape[0])[:, None] + 1
    table = SpotTable(
        sp.csr_matrix(counts), ("A",), np.stack([x, y], 1), 55.0, array_coords=rc, lattice="hex"
    )
    grid = spot_grid(SpatialSample("hex", "visium", spots=table), ("A",), SpotHRConfig())
    assert grid.hr.shape == (1, 5, 5) and grid.measured.all()
    assert sorted(grid.hr.ravel().tolist()) == list(range(1, 26))  # no spot lost or duplicated
    assert grid.hr[0, 1, 0] == 6  # (row 1, col 1) is the 6th spot in row-major order
    np.testing.assert_allclose(
        grid.cell_centres_um(np.array([[1, 0]])), [[550.0, 300 + 50 * np.sqrt(3)]]
    )


def test_bad_counts_and_lattices() -> None:
    noisy = np.full((41, 3), 2.5)
    with pytest.raises(InputError, match="not integers"):
        spot_grid(_square_sample(counts=noisy), ("A",), SpotHRConfig())
    sample = _square_sample()
    assert sample.spots is not None
    sample.spots.is_raw_counts = False
    with pytest.raises(InputError, match="not raw counts"):
        spot_grid(sample, ("A",), SpotHRConfig())
    with pytest.raises(InputError, match=r"missing from the counts: \['Z'\]"):
        spot_grid(_square_sample(), ("A", "Z"), SpotHRConfig())
    dup = _square_sample()
    assert dup.spots is not None
    dup.spots.array_coords[3] = dup.spots.array_coords[4]
    with pytest.raises(GeometryError, match="share a lattice position"):
        spot_grid(dup, ("A",), SpotHRConfig())


def test_scrambled_pixel_coordinates_are_rejected() -> None:
    ideal = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0)), -1).reshape(-1, 2)
    affine, pitch = fit_lattice_to_um(ideal, ideal * 200 + 7)
    assert pitch == pytest.approx(200.0)
    np.testing.assert_allclose(affine, [[200, 0, 7], [0, 200, 7]], atol=1e-9)
    shuffled = (ideal * 200)[np.random.default_rng(0).permutation(16)]
    with pytest.raises(GeometryError, match="do not follow the array coordinates"):
        fit_lattice_to_um(ideal, shuffled)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"multiple of spots\.factor"):
        SpotHRConfig(factor=3, patch=8)
    with pytest.raises(ConfigError, match="pitch_um"):
        SpotHRConfig(pitch_um=-1.0)


# --------------------------------------------------------------------------- stores via the reader
def _read(files: dict) -> SpatialSample:
    from diffst.io.legacy_st import read_legacy_st

    return read_legacy_st(files["counts"], files["spots"], files["image"])


def _prepare_cfg(**spots: object) -> PrepareConfig:
    views = ViewConfig(tissue_px=16, cell_grid=2, tile_px=8)
    return PrepareConfig(
        genes=4, hr="spots", views=views, spots=SpotHRConfig(split_block=8, **spots)
    )


@pytest.fixture(scope="module")
def sections(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return write_sections(tmp_path_factory.mktemp("legacy_st"), n=3)


@pytest.fixture(scope="module")
def poisoned(sections: list[dict]) -> tuple[list[SpatialSample], tuple[int, int]]:
    """Sections with one in-tissue spot of the held-out section poisoned and flagged off-tissue."""
    samples = [_read(f) for f in sections]
    held = samples[2].spots
    assert held is not None
    k = held.n_spots // 2
    counts = held.counts.tolil()
    counts[k, :] = POISON
    held.counts = counts.tocsr()
    flags = np.ones(held.n_spots, dtype=bool)
    flags[k] = False
    samples[2].metadata[SPOT_IN_TISSUE] = flags
    assert held.array_coords is not None
    return samples, (int(held.array_coords[k, 0]), int(held.array_coords[k, 1]))


@pytest.fixture(scope="module")
def multi_store(
    poisoned: tuple[list[SpatialSample], tuple[int, int]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    samples, _ = poisoned
    out = tmp_path_factory.mktemp("stores") / "multi"
    prepare_multi(samples[:2], samples[2], out, _prepare_cfg())
    return out


def test_multi_store_layout_panel_and_train_only_statistics(
    multi_store: Path, poisoned: tuple[list[SpatialSample], tuple[int, int]]
) -> None:
    samples, _ = poisoned
    m = json.loads((multi_store / "manifest.json").read_text())
    sections = m["spots"]["sections"]
    assert [s["role"] for s in sections] == ["train", "train", "heldout"]
    # panel: top-4 by counts summed over the two training sections only (poison ignored)
    totals = sum(np.asarray(s.spots.counts.sum(axis=0)).ravel() for s in samples[:2])
    expected = [samples[0].genes[i] for i in np.argsort(-totals, kind="stable")[:4]]
    assert m["genes"] == expected
    sec = {split: np.load(multi_store / split / SECTION_FILE) for split in ("train", "val", "test")}
    assert set(sec["test"]) == {2} and set(sec["train"]) <= {0, 1} and set(sec["val"]) <= {0, 1}
    # normalisation: 99.9th percentile of log1p counts over measured spots of train patches
    hr = np.load(multi_store / "train" / "hr.npy")
    mask = np.load(multi_store / "train" / "mask.npy").astype(bool)
    assert hr.max() < POISON and m["normalisation"]["kind"] == "log1p_gene"
    assert max(m["normalisation"]["gene_scale"]) < np.log1p(POISON) / 2
    assert m["geometry"]["factor"] == 2 and m["geometry"]["lr_mode"] == "spots"
    assert mask.any() and m["counts"]["section2_counts"]["spots_outside_tissue"] == 1
    for split in ("train", "val", "test"):
        assert m["splits"][split]["n_patches"] == len(sec[split]) > 0


def test_store_lr_equals_sums_of_measured_spots(multi_store: Path) -> None:
    for split in ("train", "test"):
        hr = np.load(multi_store / split / "hr.npy").astype(np.int64)
        mask = np.load(multi_store / split / "mask.npy").astype(bool)
        lr = np.load(multi_store / split / "lr.npy")
        n = np.load(multi_store / split / LR_SPOTS_FILE)
        n_, g, p, _ = hr.shape
        blocks = (hr * mask[:, None]).reshape(n_, g, p // 2, 2, p // 2, 2).sum(axis=(3, 5))
        np.testing.assert_array_equal(lr, blocks)
        np.testing.assert_array_equal(n, mask.reshape(n_, p // 2, 2, p // 2, 2).sum(axis=(2, 4)))
        np.testing.assert_array_equal(np.load(multi_store / split / "lr_mask.npy"), n > 0)
        assert (hr[:, :, ~mask.any(0)] == 0).all()


def test_poisoned_spot_never_enters_lr_loss_or_metrics(
    multi_store: Path, poisoned: tuple[list[SpatialSample], tuple[int, int]]
) -> None:
    import torch

    from diffst.data.dataset import PatchDataset
    from diffst.diffusion.losses import masked_mean
    from diffst.evaluation.api import load_store_split
    from diffst.metrics import pearson_per_gene, rmse_per_gene

    _, (row, col) = poisoned
    m = json.loads((multi_store / "manifest.json").read_text())
    r0, c0 = m["spots"]["sections"][2]["origin_rc"]
    truth, _ = load_store_split(multi_store, "test")
    hits = 0
    for i, (pr, pc) in enumerate(truth.origin_bins):
        r, c = row - r0 - pr, col - c0 - pc
        if not (0 <= r < truth.hr.shape[-1] and 0 <= c < truth.hr.shape[-1]):
            continue
        hits += 1
        assert not truth.mask[i, r, c]  # metrics mask
        assert truth.lr[i].max() < POISON  # LR sums
        item = PatchDataset(multi_store, "test")[i]
        assert item["mask"][0, r, c] == 0  # loss mask
        # the loss and the metrics are blind to whatever sits under the mask
        values = torch.rand(1, *item["hr"].shape)
        poisoned_values = values.clone()
        poisoned_values[0, :, r, c] = POISON
        mask = item["mask"][None]
        assert torch.equal(masked_mean(values, mask), masked_mean(poisoned_values, mask))
        pred = np.random.default_rng(i).random(truth.hr[i].shape)
        bad = truth.hr[i].copy()
        bad[:, r, c] = POISON
        for metric in (pearson_per_gene, rmse_per_gene):
            np.testing.assert_array_equal(
                metric(pred, bad, truth.mask[i]), metric(pred, truth.hr[i], truth.mask[i])
            )
    assert hits > 0


def test_views_show_the_image_under_the_patch() -> None:
    sample = _square_sample(shape=(12, 13))
    table = sample.spots
    assert table is not None and sample.image is not None
    pixels = np.zeros((64, 64, 3), np.uint8)
    # a bright square over grid cell (4, 4): lattice (6, 9), spot centre (1830, 1250) µm
    col, row = sample.image.um_to_px.apply(np.array([[9 * 200 + 30.0, 6 * 200 + 50.0]]))[0]
    pixels[int(row - 2) : int(row + 3), int(col - 2) : int(col + 3)] = 255
    sample.image = SpatialImage(pixels, ("R", "G", "B"), sample.image.um_to_px)
    grid = spot_grid(sample, ("A",), SpotHRConfig())
    views = ViewConfig(tissue_px=32, cell_grid=4, tile_px=8, intensity_percentiles=(0.0, 100.0))
    patches = spot_patches(grid, SpotHRConfig(min_measured_fraction=0.0), views, 0)
    first = int(np.flatnonzero((patches.grid_rc == [0, 0]).all(axis=1))[0])
    tissue = patches.tissue[first, 0].astype(float)
    # 8 cells over 32 px: cell (4, 4) is view pixels [16, 20) × [16, 20)
    assert (
        tissue[16:20, 16:20].mean() > 200 and tissue[:12].max() < 30 and tissue[:, :12].max() < 30
    )
    np.testing.assert_allclose(patches.origin_um[first], [0.0, 0.0])


def test_reader_rejects_bad_legacy_files(sections: list[dict], tmp_path: Path) -> None:
    from diffst.io.legacy_st import read_legacy_st

    src = sections[0]
    lines = gzip.open(src["counts"], "rt").read().splitlines()
    n_genes = len(lines[0].split("\t")) - 1
    for name, body, error, match in [
        ("dup", [*lines, lines[1]], InputError, "more than once"),
        ("absent", [*lines, "99x99\t" + "\t".join(["1"] * n_genes)], InputError, "no row in"),
        (
            "float",
            [lines[0], lines[1].rsplit("\t", 1)[0] + "\t0.693", *lines[2:]],
            InputError,
            "integer",
        ),
    ]:
        path = tmp_path / f"{name}.tsv.gz"
        with gzip.open(path, "wt") as fh:
            fh.write("\n".join(body) + "\n")
        with pytest.raises(error, match=match):
            read_legacy_st(path, src["spots"], src["image"])
    with pytest.raises(GeometryError, match="disagrees"):
        read_legacy_st(src["counts"], src["spots"], src["image"], um_per_px=30.0)


def test_prepare_cli_hr_spots(
    sections: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffst.cli import main

    folder = tmp_path / "one"
    folder.mkdir()
    for path in sections[0].values():
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    out = tmp_path / "store"
    args = ["prepare", "--input", str(folder), "--platform", "legacy_st", "--out", str(out)]
    sets = ["spots.split_block=8", "views.tissue_px=16", "views.cell_grid=2", "views.tile_px=8"]
    status = main(
        [*args, "--hr", "spots", "--genes", "3", *(a for s in sets for a in ("--set", s))]
    )
    assert status == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["geometry"]["lr_mode"] == "spots" and len(m["genes"]) == 3
    assert (out / "alignment.png").is_file() and "low count" in (out / "summary.md").read_text()
    assert main([*args, "--hr", "spots", "--set", "spots.pitch_um=-3"]) == 2
    dry = ["--hr", "spots", "--genes", "3", "--dry-run"]
    assert main([*args, *dry, *(a for s in sets for a in ("--set", s))]) == 0
    printed = capsys.readouterr().out
    assert (
        "# grid: (16, 18) square lattice, pitch 200 µm" in printed and "# patches: train" in printed
    )


def test_bundled_visium_hex_spots_and_log_normalised_h5ad() -> None:
    from diffst.datasets import visium_h5ad_mini, visium_mini
    from diffst.sections.spot_lattice import grid_to_lattice, lattice_to_grid

    sample = visium_mini()
    table = sample.spots
    assert table is not None and table.lattice == "hex" and table.array_coords is not None
    genes = tuple(table.genes[i] for i in np.argsort(-np.asarray(table.counts.sum(0)).ravel())[:3])
    grid = spot_grid(sample, genes, SpotHRConfig())
    cells, frame = lattice_to_grid(table.array_coords, "hex")
    np.testing.assert_array_equal(grid_to_lattice(cells, frame), table.array_coords)
    assert grid.measured.sum() == table.n_spots  # one cell per spot, none lost or merged
    dense = table.counts.toarray()[:, [table.genes.index(g) for g in genes]]
    np.testing.assert_array_equal(grid.hr[:, cells[:, 0], cells[:, 1]].T, dense)
    assert grid.pitch_um == pytest.approx(100.0, rel=0.01)
    with pytest.raises(InputError, match="not raw counts"):
        spot_grid(visium_h5ad_mini(), ("x",), SpotHRConfig())


def test_hex_store_and_views(tmp_path: Path) -> None:
    from diffst.preparation.spots.api import prepare_spots

    r, c = np.meshgrid(np.arange(12), np.arange(24), indexing="ij")
    keep = (r + c) % 2 == 0
    rc = np.stack([r[keep], c[keep]], axis=1)
    centres = np.stack([rc[:, 1] * 50.0 + 80.0, rc[:, 0] * 50 * np.sqrt(3) + 60.0], axis=1)
    counts = np.random.default_rng(0).poisson(5.0, (rc.shape[0], 3))
    table = SpotTable(sp.csr_matrix(counts), ("A", "B", "C"), centres, 55.0, array_coords=rc)
    table.lattice = "hex"
    pixels = np.zeros((120, 140, 3), np.uint8)
    # bright disk on the odd-row spot (array_row 5, array_col 7) → grid cell (5, 3)
    cx, cy = (7 * 50.0 + 80.0) / 10, (5 * 50 * np.sqrt(3) + 60.0) / 10
    yy, xx = np.mgrid[0:120, 0:140] + 0.5
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < 9] = 255
    image = SpatialImage(pixels, ("R", "G", "B"), AffineTransform.from_pixel_size(10.0))
    sample = SpatialSample("hex", "visium", image=image, spots=table)
    views = ViewConfig(tissue_px=32, cell_grid=2, tile_px=8, intensity_percentiles=(0.0, 100.0))
    cfg = PrepareConfig(genes=2, hr="spots", views=views, split=SplitConfig(fractions=(1, 0, 0)))
    store = prepare_spots(sample, tmp_path / "hex", cfg).path
    hr = np.load(store / "train" / "hr.npy")
    origins = np.load(store / "train" / "origin_um.npy")
    first = int(np.flatnonzero((origins == 0).all(axis=1))[0])
    assert hr.shape[1:] == (2, 8, 8) and np.load(store / "train" / "mask.npy")[first].all()
    tissue = np.load(store / "train" / "tissue.npy")[first, 0].astype(float)
    ys, xs = np.nonzero(tissue > 128)
    # grid cell (5, 3) spans view pixels [20, 24) × [12, 16); the crop sits a quarter pitch
    # right of even rows, so odd-row spots appear a quarter cell (1 px) right of centre
    assert 20 <= ys.mean() <= 24 and 14 <= xs.mean() <= 16


def test_held_out_only_store_says_where_its_statistics_come_from(
    poisoned: tuple[list[SpatialSample], tuple[int, int]], tmp_path: Path
) -> None:
    from diffst.preparation.api import prepare

    samples, _ = poisoned
    cfg = dataclasses.replace(_prepare_cfg(), split=SplitConfig(fractions=(0.0, 0.0, 1.0)))
    store = prepare(samples[0], tmp_path / "held", cfg).path  # dispatches on cfg.hr
    m = json.loads((store / "manifest.json").read_text())
    assert m["splits"]["train"]["n_patches"] == 0 and m["splits"]["test"]["n_patches"] > 0
    assert m["normalisation_source"].startswith("all patches")


@pytest.mark.parametrize(("factor", "patch"), [(3, 9), (4, 8)])
def test_factor_3_and_4_stores(
    sections: list[dict], tmp_path: Path, factor: int, patch: int
) -> None:
    from diffst.data.dataset import PatchDataset
    from diffst.preparation.api import prepare

    spots = SpotHRConfig(factor=factor, patch=patch, stride=factor, split_block=patch)
    cfg = dataclasses.replace(_prepare_cfg(), spots=spots)
    store = prepare(_read(sections[0]), tmp_path / "s", cfg).path
    hr = np.load(store / "train" / "hr.npy").astype(np.int64)
    mask = np.load(store / "train" / "mask.npy").astype(bool)
    n, g, q = hr.shape[0], hr.shape[1], patch // factor
    blocks = (hr * mask[:, None]).reshape(n, g, q, factor, q, factor).sum(axis=(3, 5))
    np.testing.assert_array_equal(np.load(store / "train" / "lr.npy"), blocks)
    item = PatchDataset(store, "train", augment=True)[0]
    assert tuple(item["lr"].shape) == (4, q, q) and tuple(item["hr"].shape) == (4, patch, patch)
