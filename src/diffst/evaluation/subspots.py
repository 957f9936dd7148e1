"""Score a sub-spot prediction (a spot-array checkpoint below the pitch) against transcripts.

Where a spot section has a transcript-resolved truth (a synthetic section written as Visium
files, or a Visium HD / Xenium section pooled into spots), :func:`score_subspots` puts the
prediction, the truth and two baselines on the sub-spot grid of the prediction (``obs`` columns
``bin_row``/``bin_col``; the spot of each sub-spot is its LR cell) and scores them with the
metrics of :mod:`diffst.metrics`:

* **truth**: the molecules of each sub-spot's cell (each molecule goes to the nearest sub-spot
  centre, kept when it lies within half a sub-spot diagonal of it);
* **nearest**: every sub-spot holds ``1/k²`` of its spot (no detail below the spot, by
  construction);
* **cubic**: the spots' counts interpolated at the sub-spot centres (Clough–Tocher, piecewise
  cubic on the spots' triangulation; the irregular-lattice counterpart of bicubic) and, like the
  projected prediction, rescaled so each spot's sub-spots sum to the spot.

Metrics are per gene: total PCC over sub-spots, detail PCC (deviations from the spot's mean,
:func:`~diffst.metrics.detail_pcc_per_gene`) and the split-half noise ceilings of both. Spots
measure a disc, the truth counts the whole lattice cell, so levels differ by a constant share and
only scale-free metrics are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst import metrics as met
from diffst.io.sample import InputError, SpatialSample

if TYPE_CHECKING:
    import anndata

__all__ = ["SubspotScores", "score_subspots", "subspot_figure"]


@dataclass
class SubspotScores:
    """Per-gene scores of a sub-spot prediction and its baselines on one section."""

    genes: tuple[str, ...]
    pcc: dict[str, np.ndarray] = field(default_factory=dict)  # method → [G] total PCC
    detail_pcc: dict[str, np.ndarray] = field(default_factory=dict)  # method → [G] detail PCC
    ceiling: met.NoiseCeiling | None = None  # split-half ceilings of the truth
    n_subspots: int = 0
    factor: int = 1
    centres_um: np.ndarray | None = None  # [n, 2] sub-spot centres (x, y), µm
    spot_centres_um: np.ndarray | None = None  # [n_spots, 2] the measured spots' centres, µm
    spot_counts: np.ndarray | None = None  # [G, n_spots] the measured spots (the input)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # truth / method → [G, n]

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean over genes (NaN-aware) of each metric per method, plus ``ceiling``."""
        out = {
            m: {
                "pcc": float(np.nanmean(self.pcc[m])),
                "detail_pcc": float(np.nanmean(self.detail_pcc[m])),
            }
            for m in self.pcc
        }
        if self.ceiling is not None:
            out["ceiling"] = {
                "pcc": float(np.nanmean(self.ceiling.total)),
                "detail_pcc": float(np.nanmean(self.ceiling.detail)),
            }
        return out


def _truth_counts(
    centres: np.ndarray, reach: float, truth: SpatialSample, genes: tuple[str, ...]
) -> np.ndarray:
    """``[G, n]`` molecules of each gene nearest to each sub-spot centre (within ``reach``)."""
    from scipy.spatial import cKDTree

    if truth.transcripts is None:
        raise InputError(f"sample {truth.name!r}: the truth needs transcripts")
    source = truth.transcripts
    where = {g: k for k, g in enumerate(source.genes)}
    missing = [g for g in genes if g not in where]
    if missing:
        raise InputError(f"sample {truth.name!r}: field genes lacks {missing} of the prediction")
    panel = np.full(len(source.genes), -1, dtype=np.int64)
    panel[[where[g] for g in genes]] = np.arange(len(genes))
    tree = cKDTree(centres)
    out = np.zeros((len(genes), len(centres)), dtype=np.int64)
    for chunk in source.iter_chunks():
        g = panel[np.asarray(chunk.gene)]
        keep = g >= 0
        if not keep.any():
            continue
        xy = np.column_stack([chunk.x_um[keep], chunk.y_um[keep]])
        dist, nearest = tree.query(xy, k=1, distance_upper_bound=reach)
        ok = np.isfinite(dist)
        np.add.at(out, (g[keep][ok], nearest[ok]), 1)
    return out


def _spot_rows(pred: anndata.AnnData, section: SpatialSample) -> tuple[np.ndarray, np.ndarray]:
    """Spot-table row of every sub-spot and the table's columns of the prediction's genes."""
    table = section.spots
    if table is None:
        raise InputError(f"sample {section.name!r}: the section needs its spot table")
    rows = {s: k for k, s in enumerate(table.ids)}
    spots = [str(s) for s in pred.obs["spot"]]
    unknown = sorted({s for s in spots if s not in rows})
    if unknown:
        raise InputError(f"sample {section.name!r}: spots {unknown[:5]} of the prediction unknown")
    column = {g: k for k, g in enumerate(table.genes)}
    column.update({g: k for k, g in enumerate(table.gene_ids)})
    genes = [str(g) for g in pred.var_names]
    absent = [g for g in genes if g not in column]
    if absent:
        raise InputError(f"sample {section.name!r}: genes {absent[:5]} missing from the spots")
    return np.array([rows[s] for s in spots]), np.array([column[g] for g in genes])


def _block_projection(values: np.ndarray, block: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``values [G, n]`` rescaled so every block's sum equals ``target [G, n_blocks]`` (even
    split where a block sums to 0)."""
    n_blocks = target.shape[1]
    size = np.bincount(block, minlength=n_blocks).astype(np.float64)
    out = np.empty_like(values, dtype=np.float64)
    for g in range(values.shape[0]):
        total = np.bincount(block, weights=values[g], minlength=n_blocks)
        scale = np.divide(target[g], total, out=np.zeros(n_blocks), where=total > 0)
        even = np.where(total > 0, 0.0, target[g] / np.maximum(size, 1.0))
        out[g] = values[g] * scale[block] + even[block]
    return out


def score_subspots(
    pred: anndata.AnnData | str | os.PathLike[str],
    section: SpatialSample,
    truth: SpatialSample,
    *,
    n_splits: int = 8,
    seed: int = 0,
) -> SubspotScores:
    """Score a sub-spot prediction and the nearest and cubic baselines against transcripts.

    Parameters
    ----------
    pred
        A ``diffst predict`` output of a spot-array checkpoint (``uns['diffst']['below_pitch']``).
    section
        The spot section it was predicted from (its spot table: the baselines' input).
    truth
        The same tissue with its transcripts, in the same µm frame as ``section``.
    n_splits, seed
        Split-half noise ceiling (:func:`~diffst.metrics.split_half_ceiling`).
    """
    import anndata as ad
    from scipy.interpolate import CloughTocher2DInterpolator

    adata = pred if isinstance(pred, ad.AnnData) else ad.read_h5ad(pred)
    below = adata.uns.get("diffst", {}).get("below_pitch")
    if below is None:
        raise InputError("score_subspots: the prediction is not a sub-spot prediction")
    k = int(below["factor"])
    genes = tuple(str(g) for g in adata.var_names)
    rows = adata.obs["bin_row"].to_numpy()
    cols = adata.obs["bin_col"].to_numpy()
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    centres = adata.obs[["x_um", "y_um"]].to_numpy(dtype=np.float64)
    sub = float(below["subspot_um"])
    truth_n = _truth_counts(centres, 0.5 * sub * np.sqrt(2.0), truth, genes)

    spot_row, gene_col = _spot_rows(adata, section)
    table = section.spots
    assert table is not None
    measured = table.counts[:, gene_col].toarray().T.astype(np.float64)  # [G, n_spots]
    used, block = np.unique(spot_row, return_inverse=True)
    spot_sums = measured[:, used]
    nearest = spot_sums[:, block] / (k * k)
    cubic = np.empty_like(nearest)
    spot_xy = np.asarray(table.centers_um, dtype=np.float64)
    for g in range(len(genes)):
        fit = CloughTocher2DInterpolator(spot_xy, measured[g] / (k * k))
        values = fit(centres)
        cubic[g] = np.clip(np.where(np.isfinite(values), values, nearest[g]), 0.0, None)
    cubic = _block_projection(cubic, block, spot_sums)

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(genes), *shape), dtype=np.float64)
        out[:, rows, cols] = values
        return out

    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    cells = met.lr_cell_index(shape, k)
    truth_grid = grid(truth_n.astype(np.float64))
    scores = SubspotScores(
        genes, n_subspots=len(rows), factor=k, centres_um=centres,
        spot_centres_um=spot_xy[used], spot_counts=spot_sums,
    )  # fmt: skip
    scores.values["truth"] = truth_n.astype(np.float64)
    methods: dict[str, Any] = {
        "diffst": np.asarray(adata.X, dtype=np.float64).T,
        "nearest": nearest,
        "cubic": cubic,
    }
    for name, values in methods.items():
        scores.values[name] = values
        pred_grid = grid(values)
        scores.pcc[name] = met.pearson_per_gene(pred_grid, truth_grid, mask)
        scores.detail_pcc[name] = met.detail_pcc_per_gene(pred_grid, truth_grid, mask, cells)
    scores.ceiling = met.split_half_ceiling(truth_grid, mask, cells, n_splits=n_splits, seed=seed)
    return scores


def subspot_figure(
    scores: SubspotScores,
    path: str | os.PathLike[str],
    genes: tuple[str, ...] | list[str] | None = None,
    *,
    spot_diameter_um: float = 55.0,
) -> str:
    """PNG of a sub-spot prediction beside its input and its truth, one row per gene.

    Columns: the measured spots (discs of ``spot_diameter_um``), the cubic baseline, the diffst
    sub-spots and the transcripts counted on the sub-spot grid, each with its own colour scale
    (levels differ by the disc-to-cell share; shapes are what to compare). Written atomically;
    returns the path.

    Parameters
    ----------
    scores
        :func:`score_subspots` output (it keeps the per-sub-spot values).
    genes
        Genes to draw (default: the two with the highest diffst detail PCC).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    if scores.centres_um is None or scores.spot_centres_um is None or scores.spot_counts is None:
        raise ValueError("subspot_figure: scores without values (use score_subspots)")
    if genes is None:
        order = np.argsort(-np.nan_to_num(scores.detail_pcc["diffst"], nan=-2.0))
        genes = [scores.genes[i] for i in order[:2]]
    index = {g: i for i, g in enumerate(scores.genes)}
    unknown = [g for g in genes if g not in index]
    if unknown:
        raise ValueError(f"subspot_figure: genes {unknown} not in the scores")
    sub_um = _pitch(scores.centres_um)
    columns = (("spots", "measured spots"), ("cubic", "cubic, projected"),
               ("diffst", f"diffst, ×{scores.factor} finer"),
               ("truth", "transcripts"))  # fmt: skip
    lo = scores.centres_um.min(axis=0) - spot_diameter_um
    hi = scores.centres_um.max(axis=0) + spot_diameter_um
    aspect = float(np.clip((hi[0] - lo[0]) / max(hi[1] - lo[1], 1e-9), 0.3, 3.0))
    panel_w = max(2.6, 3.0 * aspect)
    panel_h = float(np.clip(panel_w / aspect, 2.4, 5.5))
    fig, axes = plt.subplots(
        len(genes),
        len(columns),
        figsize=(0.4 + panel_w * len(columns), 0.6 + panel_h * len(genes)),
        squeeze=False,
    )
    for r, gene in enumerate(genes):
        g = index[gene]
        for c, (key, title) in enumerate(columns):
            ax = axes[r, c]
            if key == "spots":
                xy, vals = scores.spot_centres_um, scores.spot_counts[g]
                shapes = [Circle((x, y), spot_diameter_um / 2) for x, y in xy]
            else:
                xy, vals = scores.centres_um, scores.values[key][g]
                shapes = [Circle((x, y), sub_um / 2) for x, y in xy]
            coll = PatchCollection(shapes, cmap="magma", linewidths=0)
            coll.set_array(np.asarray(vals, dtype=np.float64))
            ax.add_collection(coll)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(hi[1], lo[1])  # image orientation: y down
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(gene)
            if key in scores.pcc:
                ax.set_xlabel(
                    f"PCC {scores.pcc[key][g]:.2f}, detail {scores.detail_pcc[key][g]:.2f}",
                    fontsize=8,
                )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return str(out)


def _pitch(centres: np.ndarray) -> float:
    """Median nearest-neighbour distance of the sub-spot centres (their lattice pitch), µm."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(dist[:, 1]))
