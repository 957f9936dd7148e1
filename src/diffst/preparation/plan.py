"""What ``prepare`` decides before it writes: the gene panel and the patch plan (types shared by
the transcript route, the spot route, the store writer, the summary and the figures)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.io.sample import InputError, SpatialSample
from diffst.sections.binning import SourceScan
from diffst.sections.config import PrepareConfig
from diffst.sections.inputs import SectionInputs
from diffst.sections.tiling import SPLITS, patch_grid, split_blocks

__all__ = ["PatchPlan", "PreparedStore", "plan_patches", "select_genes", "spatial_variability"]


def select_genes(sample: SpatialSample, cfg: PrepareConfig, scan: SourceScan) -> tuple[str, ...]:
    """The gene panel: ``cfg.gene_list`` (validated) or the top-``cfg.genes`` non-control genes
    by ``scan.totals`` (``gene_selection="counts"``) or by ``scan.spatial``, Moran's I
    (``"spatial"``; genes without molecules last), ties broken by totals, then source order.
    :func:`~diffst.preparation.api.plan_section` passes statistics of the training blocks only,
    so held-out blocks never influence the panel."""
    names = sample.genes
    control = sample.control
    if cfg.gene_list is not None:
        return _read_gene_list(Path(cfg.gene_list), names, control)
    usable = np.flatnonzero(~control)
    if len(usable) < cfg.genes:
        raise InputError(
            f"sample {sample.name!r}: {cfg.genes} genes requested but only {len(usable)} "
            "non-control genes exist"
        )
    order = usable[np.argsort(-scan.totals[usable], kind="stable")]
    if cfg.gene_selection == "spatial":
        if scan.spatial is None:
            raise ConfigError("gene_selection=spatial: the scan carries no Moran's I")
        score = np.where(scan.totals[order] > 0, scan.spatial[order], -np.inf)
        order = order[np.argsort(-score, kind="stable")]
    return tuple(names[k] for k in order[: cfg.genes])


def spatial_variability(
    counts: sp.csr_matrix, shape_lr: tuple[int, int], cells: np.ndarray, block: int = 256
) -> np.ndarray:
    """Moran's I of every gene's log1p counts over the LR cells marked in ``cells``.

    Parameters
    ----------
    counts
        ``[h·w, n_genes]`` counts per LR cell (row ``a·w + b``).
    shape_lr
        ``(h, w)`` of the LR grid.
    cells
        ``[h, w]`` bool: the cells that count (in tissue, in the training blocks).
    block
        Genes densified at once (memory ``≈ 8 · cells · block`` bytes).

    Returns
    -------
    np.ndarray
        ``[n_genes]`` float64; ``I = (n / W) · zᵀAz / zᵀz`` with rook neighbours ``A`` among
        the cells (``W`` its number of ordered pairs); 0 for constant genes. Spatially random
        maps give ``I ≈ −1/(n−1)``, smooth gradients and domains approach 1.
    """
    h, w = shape_lr
    keep = np.asarray(cells, dtype=bool).ravel()
    index = np.full(h * w, -1, np.int64)
    index[keep] = np.arange(keep.sum())
    grid = index.reshape(h, w)
    pairs = [
        (grid[:, :-1].ravel(), grid[:, 1:].ravel()),
        (grid[:-1, :].ravel(), grid[1:, :].ravel()),
    ]
    src = np.concatenate([a for a, b in pairs])
    dst = np.concatenate([b for a, b in pairs])
    ok = (src >= 0) & (dst >= 0)
    n = int(keep.sum())
    adjacency = sp.csr_matrix((np.ones(ok.sum()), (src[ok], dst[ok])), shape=(n, n))
    adjacency = adjacency + adjacency.T
    total_weight = float(adjacency.sum())
    sub = counts[keep].tocsc()
    out = np.zeros(sub.shape[1])
    if n < 3 or total_weight == 0:
        return out
    for start in range(0, sub.shape[1], block):
        z = np.log1p(sub[:, start : start + block].toarray().astype(np.float64))
        z -= z.mean(axis=0)
        num = np.einsum("ij,ij->j", z, adjacency @ z)
        den = np.einsum("ij,ij->j", z, z)
        safe = np.where(den > 0, den, 1.0)
        out[start : start + block] = np.where(den > 0, n / total_weight * num / safe, 0.0)
    return out


def _read_gene_list(path: Path, names: tuple[str, ...], control: np.ndarray) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read the gene list ({err.strerror})") from None
    genes = tuple(dict.fromkeys(s.strip() for s in lines if s.strip() and not s.startswith("#")))
    if not genes:
        raise InputError(f"{path}: the gene list is empty")
    known = set(names)
    missing = [g for g in genes if g not in known]
    if missing:
        raise InputError(f"{path}: requested genes missing from the sample: {missing}")
    controls = [g for g in genes if control[names.index(g)]]
    if controls:
        raise InputError(f"{path}: control probes cannot be modelled: {controls}")
    return genes


@dataclass
class PatchPlan:
    """Which patches are kept and where they go."""

    rows: np.ndarray  # [M] top-left HR row of each kept patch
    cols: np.ndarray  # [M] top-left HR column
    split: np.ndarray  # [M] 0 train, 1 val, 2 test
    tissue_fraction: np.ndarray  # [M] in-tissue share
    blocks: np.ndarray  # [bh, bw] split index per block
    row_edges: np.ndarray  # [bh + 1] block row edges, HR bins
    col_edges: np.ndarray  # [bw + 1] block column edges, HR bins
    n_candidates: int  # windows before the tissue filter
    n_low_tissue: int  # dropped for too little tissue
    patch: int  # patch side in HR bins

    def count(self, split: str) -> int:
        """Patches in ``split``."""
        return int(np.count_nonzero(self.split == SPLITS.index(split)))


def plan_patches(section: SectionInputs, cfg: PrepareConfig) -> PatchPlan:
    """Tile the section, drop low-tissue windows, assign splits.

    Raises :class:`ConfigError` when a split with a positive fraction ends up empty.
    """
    blocks, row_edges, col_edges = split_blocks(
        section.geometry.shape_hr, section.geometry.hr_um, cfg.split, section.geometry.factor
    )
    # validation and test windows sit on the section's own LR grid (scored from one LR tiling)
    grid = patch_grid(
        section.tissue, cfg.patch, cfg.stride, row_edges, col_edges,
        aligned=blocks != SPLITS.index("train"), factor=section.geometry.factor,
    )  # fmt: skip
    assert grid.block_row is not None and grid.block_col is not None
    split = blocks[grid.block_row, grid.block_col].astype(np.int64)
    keep = grid.tissue_fraction >= cfg.tissue.min_patch_fraction
    plan = PatchPlan(
        grid.rows[keep],
        grid.cols[keep],
        split[keep],
        grid.tissue_fraction[keep],
        blocks,
        row_edges,
        col_edges,
        len(grid.rows),
        int(np.count_nonzero(~keep)),
        cfg.patch,
    )
    for k, name in enumerate(SPLITS):
        if cfg.split.fractions[k] > 0 and plan.count(name) == 0:
            raise ConfigError(
                f"split {name!r} is empty ({plan.n_candidates} windows, {plan.n_low_tissue} with "
                f"too little tissue, {plan.blocks.size} blocks of about {cfg.split.block_um} µm); "
                "lower split.block_um, --patch or "
                "tissue.min_patch_fraction, or set its fraction to 0"
            )
    return plan


@dataclass
class PreparedStore:
    """A written store: its folder and manifest."""

    path: Path
    manifest: dict[str, Any]

    def n_patches(self, split: str) -> int:
        """Patches written to ``split``."""
        return int(self.manifest["splits"][split]["n_patches"])
