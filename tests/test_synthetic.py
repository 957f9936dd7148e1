"""Simulated tissue: labelled synthetic, deterministic, molecules inside their cells, cell types
distinguishable in expression and in the image; streaming random transcripts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from diffst.io.sample import SpatialSample
from diffst.synthetic import random_transcripts, simulate_tissue


@pytest.fixture(scope="module")
def tissue() -> SpatialSample:
    return simulate_tissue(width_um=150, height_um=120, n_genes=16, n_cell_types=3, seed=7)


def _arrays(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(sample.transcripts.iter_chunks())
    return tuple(np.concatenate([getattr(c, f) for c in chunks]) for f in ("x_um", "y_um", "gene"))


def test_labelled_synthetic(tissue: SpatialSample) -> None:
    assert tissue.name.startswith("synthetic")
    assert tissue.platform == "synthetic"
    assert tissue.metadata["synthetic"] is True
    assert len(tissue.genes) == 18 and tissue.control.sum() == 2
    assert tissue.image is not None and tissue.image.shape_hw == (240, 300)
    assert tissue.image.um_per_px == pytest.approx(0.5)


def test_deterministic_by_seed(tissue: SpatialSample) -> None:
    again = simulate_tissue(width_um=150, height_um=120, n_genes=16, n_cell_types=3, seed=7)
    other = simulate_tissue(width_um=150, height_um=120, n_genes=16, n_cell_types=3, seed=8)
    a, b, c = _arrays(tissue), _arrays(again), _arrays(other)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert np.array_equal(np.asarray(tissue.image.pixels), np.asarray(again.image.pixels))
    assert len(a[0]) != len(c[0]) or not np.array_equal(a[0], c[0])


def test_molecules_inside_their_cells_and_tissue(tissue: SpatialSample) -> None:
    x, y, gene = _arrays(tissue)
    cell = tissue.metadata["transcript_cell"]
    assigned = cell >= 0
    assert np.array_equal(assigned, ~tissue.control[gene])
    _, nearest = cKDTree(tissue.metadata["cell_centers_um"]).query(np.c_[x, y][assigned])
    assert np.array_equal(nearest, cell[assigned])
    px = np.floor(tissue.tissue_mask.um_to_px.apply(np.c_[x, y][assigned])).astype(int)
    assert tissue.tissue_mask.mask[px[:, 1], px[:, 0]].all()


def test_cell_types_differ_in_expression_and_image(tissue: SpatialSample) -> None:
    _, _, gene = _arrays(tissue)
    cell = tissue.metadata["transcript_cell"]
    types = tissue.metadata["cell_type"]
    means = tissue.metadata["gene_means"]
    assigned = cell >= 0
    n_cells = np.bincount(types, minlength=3)
    observed = np.zeros_like(means)
    np.add.at(observed, (types[cell[assigned]], gene[assigned]), 1)
    observed /= n_cells[:, None]
    # the most expressed gene of each type is that type's marker, observed as well as designed
    assert len(set(np.argmax(means, axis=1))) == 3
    assert np.array_equal(np.argmax(observed, axis=1), np.argmax(means, axis=1))
    # mean colour at cell centres differs between types by more than the pixel noise
    px = np.floor(tissue.image.um_to_px.apply(tissue.metadata["cell_centers_um"])).astype(int)
    centre_rgb = np.asarray(tissue.image.pixels)[px[:, 1], px[:, 0]].astype(float)
    ring = tissue.metadata["cell_centers_um"] + np.array([2.5, 0.0])
    rp = np.floor(tissue.image.um_to_px.apply(ring)).astype(int)
    ring_rgb = np.asarray(tissue.image.pixels)[rp[:, 1], rp[:, 0]].astype(float)
    colours = np.stack([ring_rgb[types == k].mean(axis=0) for k in range(3)])
    gaps = [np.abs(colours[i] - colours[j]).max() for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 8.0
    assert centre_rgb[:, 2].mean() > centre_rgb[:, 1].mean()  # hematoxylin-blue nuclei


def test_fluorescence_channels() -> None:
    s = simulate_tissue(width_um=60, height_um=60, n_genes=5, image_kind="fluorescence", seed=1)
    assert s.image.channels == ("DAPI", "polyT") and s.image.kind == "fluorescence"
    px = np.floor(s.image.um_to_px.apply(s.metadata["cell_centers_um"])).astype(int)
    dapi = np.asarray(s.image.pixels)[:, :, 0]
    assert dapi[px[:, 1], px[:, 0]].mean() > 3 * dapi[~s.tissue_mask.mask].mean() + 50


def test_random_transcripts_stream() -> None:
    src = random_transcripts(25_000, n_genes=20, width_um=100, height_um=50, chunk_size=10_000)
    first = list(src.iter_chunks())
    second = list(src.iter_chunks())
    assert [len(c) for c in first] == [10_000, 10_000, 5_000]
    assert all(np.array_equal(a.x_um, b.x_um) for a, b in zip(first, second, strict=True))
    gene = np.concatenate([c.gene for c in first])
    x = np.concatenate([c.x_um for c in first])
    y = np.concatenate([c.y_um for c in first])
    assert gene.min() >= 0 and gene.max() < 20 and len(src.genes) == 20
    assert x.min() >= 0 and x.max() < 100 and y.max() < 50
    freq = np.bincount(gene, minlength=20)
    assert freq[0] > 1.7 * freq[1] and freq[1] > freq[5]  # Zipf-like: p_g ∝ 1/(g + 1)


@pytest.fixture(scope="module")
def detail() -> SpatialSample:
    from diffst.synthetic import simulate_detail_section

    return simulate_detail_section(width_um=240, height_um=200, n_genes=8, seed=3)


def test_detail_section_mixes_types_below_the_lr_cell(detail: SpatialSample) -> None:
    centres, types = detail.metadata["cell_centers_um"], detail.metadata["cell_type"]
    assert detail.name.startswith("synthetic") and detail.metadata["synthetic"] is True
    cell = np.floor(centres / 40.0).astype(int)  # 40 µm LR cells
    keys = cell[:, 0] * 1000 + cell[:, 1]
    mixed = [len(np.unique(types[keys == k])) >= 2 for k in np.unique(keys)]
    assert np.mean(mixed) > 0.8
    assert len(np.unique(types)) == 4


def test_detail_section_image_shows_the_cell_types(detail: SpatialSample) -> None:
    """Brighter DAPI and larger nuclei per type, as the type's look says."""
    looks = detail.metadata["looks"]
    px = np.asarray(detail.image.pixels)
    centres, types = detail.metadata["cell_centers_um"], detail.metadata["cell_type"]
    ij = np.floor(centres / 0.5).astype(int)
    at_centre = px[ij[:, 1], ij[:, 0], 0].astype(float)
    mean_by_type = [at_centre[types == t].mean() for t in range(4)]
    assert np.argsort(mean_by_type).tolist() == np.argsort(looks["dapi"]).tolist()


def test_detail_section_round_trips_through_the_vizgen_reader(
    detail: SpatialSample, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from diffst.io.merfish import read_merfish
    from diffst.synthetic import write_merfish_outs

    write_merfish_outs(detail, tmp_path / "vizgen", offset_um=(500.0, 700.0))
    back = read_merfish(tmp_path / "vizgen", image="both")
    assert back.image.channels == ("DAPI", "polyT") and back.image.kind == "fluorescence"
    assert back.image.um_per_px == pytest.approx(0.5)
    x, y, g = _arrays(detail)
    bx, by, bg = _arrays(back)
    np.testing.assert_array_equal(
        np.bincount(g, minlength=len(detail.genes)),
        np.bincount([detail.genes.index(back.genes[k]) for k in bg], minlength=len(detail.genes)),
    )
    np.testing.assert_allclose(
        back.image.um_to_px.apply(np.c_[bx, by]), detail.image.um_to_px.apply(np.c_[x, y]),
        atol=1e-3,
    )  # fmt: skip
    mosaic = np.asarray(back.image.pixels[:, :, 0])  # uint16 mosaics: 8-bit values × 257
    np.testing.assert_array_equal(mosaic // 257, detail.image.pixels[:, :, 0])
    assert list(back.control) == [name.startswith("Blank") for name in back.genes]


def test_detail_section_detail_is_in_the_image_not_in_the_lr_map(detail: SpatialSample) -> None:
    """The expected counts of each HR bin follow its cells' types: a predictor that knows the
    types (what the image shows) has detail below the LR cell; nearest upsampling has none."""
    from diffst import metrics as M
    from diffst.baselines import nearest_upsample

    hr_um, f = 4.0, 10
    x, y, g = _arrays(detail)
    keep = ~detail.control[g]
    h, w = int(200 // hr_um), int(240 // hr_um)
    i, j = (y[keep] // hr_um).astype(int), (x[keep] // hr_um).astype(int)
    counts = np.zeros((8, h, w))
    np.add.at(counts, (g[keep], i, j), 1)
    centres, types = detail.metadata["cell_centers_um"], detail.metadata["cell_type"]
    programme = detail.metadata["gene_means"]
    expected = np.zeros((8, h, w))
    ci, cj = (centres[:, 1] // hr_um).astype(int), (centres[:, 0] // hr_um).astype(int)
    np.add.at(expected, (slice(None), ci, cj), programme[types].T)
    tissue = counts.sum(0) > 0
    cells = M.lr_cell_index((h, w), f)
    near = nearest_upsample(M.pool_sum(counts, f), f, (h, w))
    np.testing.assert_array_equal(M.detail_pcc_per_gene(near, counts, tissue, cells), 0.0)
    oracle = M.detail_pcc_per_gene(expected, counts, tissue, cells)
    assert np.nanmean(oracle) > 0.3
