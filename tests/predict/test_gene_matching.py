"""Checkpoint genes against a section: by name or by id, and genes the section lacks (LR imputed
from co-expressed genes, flagged, never projected), refused beyond ``max_missing_genes``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diffst.data.transforms import NormStats, normalise
from diffst.datasets import visium_mini
from diffst.inference.api import predict
from diffst.inference.config import PredictConfig
from diffst.inference.setup import imputation_weights, resolve_genes, tile_context
from diffst.inference.tiled import tile_batch
from diffst.io.sample import InMemoryTranscripts, InputError, SpatialSample
from diffst.runs.checkpoint import gene_neighbours, load_checkpoint
from diffst.sections.inputs import with_empty_genes

FAST = PredictConfig(
    steps=1, n_samples=2, batch_size=8, device="cpu", n_figure_genes=0, project_to_spots=True
)


@pytest.fixture(scope="module")
def section() -> SpatialSample:
    """The Visium fixture with gene symbols as names and Ensembl ids as second identifiers."""
    sample = visium_mini()
    t = sample.spots
    assert t is not None
    keep = np.sort(np.argsort(np.hypot(*(t.centers_um - t.centers_um[0]).T))[:25])
    symbols = tuple(f"SYM{k}" for k in range(len(t.genes)))
    spots = replace(
        t, counts=t.counts[keep], centers_um=t.centers_um[keep], ids=tuple(t.ids[k] for k in keep),
        array_coords=t.array_coords[keep], genes=symbols, gene_ids=t.gene_ids,
    )  # fmt: skip
    return replace(sample, name="sym", spots=spots)


def test_genes_match_by_name_or_by_id(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    t = section.spots
    assert t is not None
    by_id = make_checkpoint(list(t.gene_ids[:8]))
    a = predict(by_id, section, tmp_path / "id.h5ad", FAST)
    assert a is not None and list(a.var_names) == list(t.gene_ids[:8])
    assert list(a.var["gene_symbols"]) == list(t.genes[:8]) and a.var["in_section"].all()
    by_name = make_checkpoint(list(t.genes[:8]))
    b = predict(by_name, section, tmp_path / "name.h5ad", FAST)
    assert b is not None and list(b.var["gene_ids"]) == list(t.gene_ids[:8])
    # both read the same counts: the LR totals per gene agree
    np.testing.assert_allclose(a.var["lr_counts"].to_numpy(), b.var["lr_counts"].to_numpy())


def test_resolve_genes_reports_and_refuses() -> None:
    molecules = InMemoryTranscripts(
        np.zeros(3), np.zeros(3), np.array([0, 1, 2], dtype=np.int32), ("A", "B", "C"),
        np.zeros(3, dtype=bool),
    )  # fmt: skip
    sample = SpatialSample("s", "xenium", transcripts=molecules)
    panel = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")
    with pytest.raises(InputError, match=r"lacks 7 of the checkpoint's 10 genes \(70%"):
        resolve_genes(panel, sample, 0.5)
    genes, missing = resolve_genes(panel[:4], sample, 0.25)
    assert genes == panel[:4] and missing == ("D",)
    assert resolve_genes(panel[:3], sample, 0.0) == (panel[:3], ())


def test_with_empty_genes_adds_zeros_for_either_source(section: SpatialSample) -> None:
    t = section.spots
    assert t is not None
    grown = with_empty_genes(section, ["NEW1", "NEW2"])
    assert grown.spots is not None and grown.spots.genes[-2:] == ("NEW1", "NEW2")
    assert grown.spots.counts.shape == (t.n_spots, len(t.genes) + 2)
    assert grown.spots.counts[:, -2:].nnz == 0 and grown.spots.gene_ids[-1] == "NEW2"
    molecules = InMemoryTranscripts(
        np.zeros(2), np.zeros(2), np.array([0, 1], dtype=np.int32), ("A", "B"), np.zeros(2, bool)
    )
    tx = with_empty_genes(SpatialSample("s", "xenium", transcripts=molecules), ("C",))
    assert tx.genes == ("A", "B", "C") and tx.control.tolist() == [False, False, False]
    with pytest.raises(ValueError, match="already has"):
        with_empty_genes(section, [t.genes[0]])


def test_imputation_weights_follow_training_neighbours() -> None:
    r = np.array(
        [[1.0, 0.8, 0.2, -0.5], [0.8, 1.0, 0.1, 0.0], [0.2, 0.1, 1.0, 0.3], [-0.5, 0.0, 0.3, 1.0]]
    )
    nb = gene_neighbours(r, k=2)
    assert nb is not None and nb["index"][0] == [1, 2] and nb["pearson"][0] == [0.8, 0.2]
    assert nb["index"][3] == [2]  # only positive correlations
    genes = ("a", "b", "c", "d")
    w = imputation_weights({"gene_neighbours": nb}, genes, ("a",))
    np.testing.assert_allclose(w[0], [0.0, 0.8, 0.2, 0.0])
    assert not w[1:].any()
    # a missing neighbour is skipped; none left (or no record) → plain mean of measured genes
    w = imputation_weights({"gene_neighbours": nb}, genes, ("a", "b"))
    np.testing.assert_allclose(w[0], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(w[1], [0.0, 0.0, 1.0, 0.0])  # b: a (missing) and c
    np.testing.assert_allclose(imputation_weights({}, genes, ("d",))[3], [1 / 3, 1 / 3, 1 / 3, 0])


def test_missing_genes_are_imputed_flagged_and_not_projected(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    t = section.spots
    assert t is not None
    top = np.argsort(-np.asarray(t.counts.sum(axis=0)).ravel())[:9]
    genes = [*(t.gene_ids[k] for k in top), "GeneX"]  # 1 of 10 missing: within the default 10 %
    ckpt = make_checkpoint(genes)
    meta = load_checkpoint(ckpt)["store_meta"]
    meta["gene_neighbours"] = {"index": [[] for _ in genes], "pearson": [[] for _ in genes]}
    meta["gene_neighbours"]["index"][9], meta["gene_neighbours"]["pearson"][9] = [0, 3], [0.6, 0.2]
    ctx = tile_context(meta, True, section, FAST)
    assert ctx.missing == ("GeneX",) and ctx.measured_genes.tolist() == [True] * 9 + [False]
    # the imputed LR input of GeneX is the weighted mean of genes 0 and 3 (normalised scale)
    lr_counts, lr_mask = ctx.inputs.lr_section()
    r, c = np.argwhere(lr_mask & (lr_counts[[0, 3]].sum(axis=0) > 0))[0]  # a measured LR cell
    f = ctx.inputs.geometry.factor
    batch = tile_batch(ctx, np.array([[r * f, c * f]]), torch.device("cpu"))
    w = ctx.inputs.lr_window(int(r * f), int(c * f), ctx.patch)[0]
    assert w[[0, 3], 0, 0].sum() > 0
    norm = NormStats.from_dict(meta["normalisation"])
    lr = normalise(np.zeros((len(genes), 1, 1)), w, norm)[1]
    want = 0.75 * lr[0] + 0.25 * lr[3]
    np.testing.assert_allclose(batch["lr"][0, 9].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch["lr"][0, :9].numpy(), lr[:9], rtol=1e-5, atol=1e-6)

    adata = predict(ckpt, section, tmp_path / "m.h5ad", FAST)
    assert adata is not None
    var = adata.var
    assert var["in_section"].tolist() == [True] * 9 + [False]
    assert var.loc["GeneX", "lr_source"] == "imputed" and np.isnan(var.loc["GeneX", "lr_counts"])
    assert np.isnan(var.loc["GeneX", "spot_pcc"])
    assert adata.uns["diffst"]["missing_genes"]["genes"].tolist() == ["GeneX"]
    assert "GeneX" not in adata.uns["diffst"]["spot_consistency"]["pcc"]
    assert np.isfinite(adata.X).all() and (adata.X[:, 9] > 0).any()
    # measured genes re-aggregate to their spots (projected); the imputed one is left as is
    raw = predict(
        ckpt, section, tmp_path / "r.h5ad", dataclasses.replace(FAST, project_to_spots=False)
    )
    assert raw is not None
    np.testing.assert_allclose(adata.X[:, 9], raw.X[:, 9], rtol=1e-6)
    assert not np.allclose(adata.X[:, 0], raw.X[:, 0])
