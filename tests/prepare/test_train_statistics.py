"""Train statistics in chunks: the same normalisation scales and co-expression as one array."""

from __future__ import annotations

import numpy as np

from diffst.data.transforms import normalisation_stats
from diffst.preparation.coexpr import coexpression, coexpression_of


def _counts(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.5, 2.0, size=(1, 3000))
    counts = rng.poisson(base * rng.uniform(0.1, 3.0, size=(7, 1))).astype(np.int32)
    counts[3] = 0  # a gene without variance
    return counts


def test_chunked_coexpression_equals_one_chunk() -> None:
    counts = _counts()
    one = coexpression(counts)
    many = coexpression(counts, max_bytes=8 * 7 * 100)  # chunks of 100 bins
    np.testing.assert_allclose(many["s"], one["s"], rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(many["pearson"]), np.asarray(one["pearson"]), atol=1e-12)
    ref = np.corrcoef(counts[[0, 1, 2, 4, 5, 6]].astype(float))
    pearson = np.asarray(one["pearson"])
    np.testing.assert_allclose(pearson[np.ix_([0, 1, 2, 4, 5, 6], [0, 1, 2, 4, 5, 6])], ref,
                               atol=1e-12)  # fmt: skip
    assert pearson[3, 3] == 1.0 and (np.delete(pearson[3], 3) == 0).all()


def test_coexpression_of_gathered_columns_reads_only_the_chosen_bins() -> None:
    counts = _counts(1)
    flat = np.flatnonzero(np.arange(counts.shape[1]) % 3 != 0)
    seen: list[tuple[int, int]] = []

    def columns(a: int, b: int) -> np.ndarray:
        seen.append((a, b))
        return counts[:, flat[a:b]]

    many = coexpression_of(columns, 7, flat.size, max_bytes=8 * 7 * 250)
    one = coexpression(counts[:, flat])
    np.testing.assert_allclose(np.asarray(many["pearson"]), np.asarray(one["pearson"]), atol=1e-12)
    assert max(b - a for a, b in seen) <= 250


def test_per_gene_scales_do_not_depend_on_the_gene_chunks() -> None:
    counts = _counts(2)
    whole = normalisation_stats(counts, "log1p_gene", 16.0).gene_scale
    parts = [normalisation_stats(counts[g : g + 2], "log1p_gene", 16.0).gene_scale
             for g in range(0, 7, 2)]  # fmt: skip
    assert tuple(v for p in parts for v in p) == whole
