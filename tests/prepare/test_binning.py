"""Binning, pooling and Visium spots against naive references."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.geometry import GeometryError
from diffst.io.sample import InMemoryTranscripts, InputError
from diffst.sections.binning import (
    GridGeometry,
    bin_transcripts,
    bin_transcripts_with_stats,
    pool_grid,
    rasterise_spots,
    spot_sums_from_transcripts,
    visium_lattice,
)

GENES = ("A", "B", "C", "NegPrb")


def _source(n: int, seed: int, *, local: bool = False, chunk: int = 997) -> InMemoryTranscripts:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 105, n)
    y = rng.uniform(-5, 85, n)
    if local:  # field-of-view ordered file: chunks cover small regions
        order = np.lexsort((x // 20, y // 20))
        x, y = x[order], y[order]
    gene = rng.integers(0, len(GENES), n).astype(np.int32)
    control = np.array([False, False, False, True])
    return InMemoryTranscripts(x, y, gene, GENES, control, chunk_size=chunk)


def _naive(src: InMemoryTranscripts, genes: tuple[str, ...], geo: GridGeometry) -> np.ndarray:
    out = np.zeros((len(genes), *geo.shape_hr), dtype=np.int64)
    x0, y0 = geo.origin_um
    for x, y, g in zip(src.x_um, src.y_um, src.gene, strict=True):
        name = src.genes[g]
        if name not in genes:
            continue
        j = int(np.floor((x - x0) / geo.hr_um))
        i = int(np.floor((y - y0) / geo.hr_um))
        if 0 <= i < geo.shape_hr[0] and 0 <= j < geo.shape_hr[1]:
            out[genes.index(name), i, j] += 1
    return out


@pytest.mark.parametrize("local", [False, True])
def test_binning_matches_naive_reference(local: bool) -> None:
    src = _source(6000, 1, local=local)
    geo = GridGeometry((0.0, 0.0), 7.0, 3, (11, 14))
    genes = ("C", "A")
    hr, stats, density = bin_transcripts_with_stats(src, genes, geo, density=True, max_chunk=300)
    assert hr.dtype == np.int32 and hr.shape == (2, 11, 14)
    np.testing.assert_array_equal(hr, _naive(src, genes, geo))
    assert density is not None  # all non-control genes, whatever the panel
    np.testing.assert_array_equal(density, _naive(src, ("A", "B", "C"), geo).sum(axis=0))
    assert stats.total == 6000
    assert stats.kept == hr.sum()
    assert stats.kept + stats.outside_grid + stats.not_in_panel == stats.total


def test_bin_edges_are_half_open() -> None:
    x = np.array([0.0, 3.999, 4.0, 7.999, 8.0, -1e-9])
    y = np.zeros_like(x)
    src = InMemoryTranscripts(x, y, np.zeros(6, np.int32), ("A",), np.array([False]))
    hr = bin_transcripts(src, ("A",), GridGeometry((0.0, 0.0), 4.0, 1, (1, 2)))
    # 8.0 is the right edge of bin 1 (excluded), -1e-9 lies left of the grid
    np.testing.assert_array_equal(hr[0, 0], [2, 2])


def test_missing_gene_listed() -> None:
    with pytest.raises(InputError, match=r"\['Zz', 'Yy'\]"):
        bin_transcripts(_source(10, 0), ("A", "Zz", "Yy"), GridGeometry((0, 0), 1.0, 1, (2, 2)))


def test_pool_grid_exact_sums_with_partial_blocks() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 9, size=(3, 7, 10))
    lr = pool_grid(hr, 3)
    assert lr.shape == (3, 3, 4)
    assert lr[1, 0, 0] == hr[1, :3, :3].sum()
    assert lr[2, 2, 3] == hr[2, 6:, 9:].sum()  # 1×1 partial corner block
    np.testing.assert_array_equal(lr.sum(axis=(1, 2)), hr.sum(axis=(1, 2)))
    with pytest.raises(GeometryError):
        pool_grid(hr, 0)


def test_geometry_roundtrip_and_covering() -> None:
    geo = GridGeometry.covering((10.0, 20.0, 52.0, 41.0), 4.25, 10)
    assert geo.shape_hr == (5, 10)  # 21/4.25 → 5 rows, 42/4.25 → 10 cols
    assert GridGeometry.from_dict(geo.to_dict()) == geo
    assert geo.shape_lr == (1, 1)
    with pytest.raises(GeometryError):
        GridGeometry((0, 0), -1.0, 1, (2, 2))


def test_visium_lattice_layout() -> None:
    geo = GridGeometry((0.0, 0.0), 5.0, 10, (100, 100))  # 500 µm square
    c = visium_lattice(geo, pitch_um=100.0, diameter_um=55.0)
    r = 27.5
    assert np.all(c - r >= -1e-9) and np.all(c + r <= 500 + 1e-9)
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(axis=1), 100.0)  # triangular lattice: 6 neighbours at pitch
    rows = np.unique(np.round(c[:, 1], 6))
    np.testing.assert_allclose(np.diff(rows), 100 * np.sqrt(3) / 2)


def test_spot_sums_match_brute_force() -> None:
    src = _source(5000, 3)
    geo = GridGeometry((0.0, 0.0), 1.0, 10, (80, 100))
    centres = visium_lattice(geo, pitch_um=30.0, diameter_um=20.0)
    got = spot_sums_from_transcripts(src, ("A", "B"), centres, 20.0)
    ref = np.zeros_like(got)
    for x, y, g in zip(src.x_um, src.y_um, src.gene, strict=True):
        if g > 1:
            continue
        d = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
        for s in np.flatnonzero(d <= 10.0):
            ref[s, g] += 1
    np.testing.assert_array_equal(got, ref)
    assert got.sum() > 0


def test_rasterise_spots_nearest_and_mask() -> None:
    centres = np.array([[15.0, 15.0], [45.0, 15.0]])
    counts = np.array([[1, 10], [2, 20]])
    geo = GridGeometry((0.0, 0.0), 1.0, 10, (30, 100))  # LR cells of 10 µm, 3×10
    lr, mask = rasterise_spots(counts, centres, 10.0, geo, pitch_um=30.0)
    assert lr.shape == (2, 3, 10)
    assert lr[1, 1, 1] == 10 and lr[0, 1, 4] == 2  # cell centres (15,15) and (45,15)
    # cell (95, 15) is 50 µm from the nearest spot > pitch → masked
    assert not mask[1, 9] and lr[:, 1, 9].sum() == 0
    assert mask[1, 7]  # (75, 15): 30 µm from spot 2
