"""``prepare``, the transcript route: a :class:`SpatialSample` → a patch store of paired HR/LR
maps and image views.

:func:`~diffst.sections.inputs.build_section_inputs` turns the sample into whole-section rasters
(HR counts, LR layer, tissue mask) — ``predict`` builds its tiles from the same object —
:func:`~diffst.preparation.plan.plan_patches` places and splits the patches and
:func:`diffst.preparation.store.write_patches` writes them. Spot arrays as the HR map
(``prepare --hr spots``) take the branch in :mod:`diffst.preparation.spots`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from diffst._version import __version__
from diffst.config import to_dict
from diffst.data.transforms import NormStats, normalisation_stats
from diffst.io.sample import InputError, SpatialSample
from diffst.preparation.coexpr import coexpression_of, train_bins_mask
from diffst.preparation.plan import (
    PatchPlan,
    PreparedStore,
    plan_patches,
    select_genes,
    spatial_variability,
)
from diffst.sections.binning import (
    GridGeometry,
    SourceScan,
    SparseCounts,
    gene_counts_per_cell,
    gene_totals_in_bins,
    scan_transcripts,
)
from diffst.sections.config import PrepareConfig
from diffst.sections.inputs import (
    SectionInputs,
    build_section_inputs,
    section_geometry,
    with_bin_molecules,
)
from diffst.sections.tiling import SPLITS, split_blocks

__all__ = ["plan_section", "prepare", "train_statistics", "training_scan"]


def train_statistics(
    section: SectionInputs, plan: PatchPlan, cfg: PrepareConfig
) -> tuple[NormStats, dict[str, Any]]:
    """Normalisation statistics and co-expression from in-tissue bins of train patches only.

    Both are computed in chunks (genes for the per-gene percentiles, bins for the correlation),
    so the temporaries stay bounded for large panels on large sections instead of holding
    several float64 copies of every gene at every train bin.
    """
    train = plan.split == 0
    bins = train_bins_mask(
        section.geometry.shape_hr, plan.rows[train], plan.cols[train], cfg.patch, section.tissue
    )
    assert section.hr is not None
    n_genes = section.hr.shape[0]
    flat = np.flatnonzero(bins.ravel())
    if isinstance(section.hr, SparseCounts):
        return _sparse_train_statistics(section.hr, flat, cfg, section.lr_bins)
    hr = section.hr.reshape(n_genes, -1)
    if flat.size == 0:
        return normalisation_stats(hr[:, flat], cfg.normalisation, section.lr_bins), {}
    step = max(1, _STATS_BYTES // (16 * flat.size))  # genes per percentile chunk
    parts = [
        normalisation_stats(hr[g : g + step][:, flat], cfg.normalisation, section.lr_bins)
        for g in range(0, n_genes, step)
    ]
    norm = dataclasses.replace(parts[0], gene_scale=tuple(v for p in parts for v in p.gene_scale))
    coexpr = coexpression_of(lambda a, b: hr[:, flat[a:b]], n_genes, flat.size, _STATS_BYTES)
    return norm, coexpr


def _sparse_train_statistics(
    hr: SparseCounts, flat: np.ndarray, cfg: PrepareConfig, lr_bins: float
) -> tuple[NormStats, dict[str, Any]]:
    """:func:`train_statistics` of a sparse HR map: each gene's percentile from its non-zero
    train bins and its count of zeros (the same sorted values, so the same percentile)."""
    n_genes = hr.shape[0]
    if flat.size == 0:
        return normalisation_stats(np.zeros((n_genes, 0)), cfg.normalisation, lr_bins), {}
    train = hr.matrix[flat].tocsc()
    scales: list[float] = []
    for g in range(n_genes):
        nonzero = train.data[train.indptr[g] : train.indptr[g + 1]]
        values = np.zeros((1, flat.size), dtype=np.int64)
        values[0, flat.size - nonzero.size :] = np.sort(nonzero)
        scales.extend(normalisation_stats(values, cfg.normalisation, lr_bins).gene_scale)
    norm = dataclasses.replace(
        normalisation_stats(np.ones((1, 1)), cfg.normalisation, lr_bins), gene_scale=tuple(scales)
    )
    del train
    coexpr = coexpression_of(lambda a, b: hr.bins(flat[a:b]), n_genes, flat.size, _STATS_BYTES)
    return norm, coexpr


_STATS_BYTES = 1 << 28  # temporaries of the train statistics


def plan_section(
    sample: SpatialSample, cfg: PrepareConfig
) -> tuple[SourceScan, SectionInputs, PatchPlan]:
    """Scan the transcripts, choose the genes, rasterise the section and plan its patches.

    Everything :func:`prepare` computes before writing (``diffst prepare --dry-run`` prints it).
    Bin arrays no coarser than the HR bins (Visium HD ``square_002um``) are binned as molecules.
    """
    sample = with_bin_molecules(sample, cfg.hr_um)
    if sample.transcripts is None:
        raise InputError(f"sample {sample.name!r}: no transcripts were read")
    scan = scan_transcripts(sample.transcripts)
    geometry = section_geometry(sample, cfg, scan)
    genes = select_genes(sample, cfg, training_scan(sample, geometry, cfg, scan))
    section = build_section_inputs(sample, genes, geometry, cfg, scan)
    return scan, section, plan_patches(section, cfg)


def training_scan(
    sample: SpatialSample, geometry: GridGeometry, cfg: PrepareConfig, scan: SourceScan
) -> SourceScan:
    """``scan`` with per-gene totals counted over the training blocks of the split only, and
    with ``gene_selection="spatial"`` each gene's Moran's I over the LR cells of those blocks.

    The gene panel is chosen from these statistics (a panel picked from statistics that include
    the held-out blocks would leak test information into the model's design). With a gene list
    they are not needed; when every block is for training the totals are the section's.
    """
    if cfg.gene_list is not None:
        return scan
    blocks, row_edges, col_edges = split_blocks(
        geometry.shape_hr, geometry.hr_um, cfg.split, geometry.factor
    )
    train = blocks == SPLITS.index("train")
    assert sample.transcripts is not None
    rows = np.repeat(train, np.diff(row_edges), axis=0)
    bins = np.repeat(rows, np.diff(col_edges), axis=1)
    if cfg.gene_selection == "spatial":
        per_cell = gene_counts_per_cell(sample.transcripts, geometry, bins)
        totals = np.asarray(per_cell.sum(axis=0)).ravel().astype(np.int64)
        occupied = (np.asarray(per_cell.sum(axis=1)).ravel() > 0).reshape(geometry.shape_lr)
        moran = spatial_variability(per_cell, geometry.shape_lr, occupied)
        return dataclasses.replace(scan, totals=totals, spatial=moran)
    if train.all():
        return scan
    totals = gene_totals_in_bins(sample.transcripts, geometry, bins)
    return dataclasses.replace(scan, totals=totals)


def prepare(
    sample: SpatialSample,
    out_dir: str | Path,
    cfg: PrepareConfig,
    *,
    command: str | None = None,
    overwrite: bool = False,
) -> PreparedStore:
    """Build a patch store from ``sample`` (see ``docs/store_format.md``).

    Parameters
    ----------
    sample
        Section with transcripts and an image.
    out_dir
        Store folder; written atomically (nothing appears unless everything succeeded).
    cfg
        Resolved configuration.
    command
        Command line recorded in the manifest.
    overwrite
        Replace an existing store at ``out_dir``.
    """
    from diffst.preparation.store import check_target

    out_dir = Path(out_dir)
    if cfg.hr == "spots":
        from diffst.preparation.spots.api import prepare_spots

        return prepare_spots(sample, out_dir, cfg, command=command, overwrite=overwrite)
    check_target(out_dir, overwrite)
    if sample.image is None:
        raise InputError(
            f"sample {sample.name!r}: no image was read; diffst prepare needs histology"
        )
    scan, section, plan = plan_section(sample, cfg)
    provenance = {
        "command": command,
        "diffst_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "config": to_dict(cfg),
    }
    return _write(sample, section, plan, scan, cfg, out_dir, overwrite, provenance)


def _write(
    sample: SpatialSample,
    section: SectionInputs,
    plan: PatchPlan,
    scan: SourceScan,
    cfg: PrepareConfig,
    out_dir: Path,
    overwrite: bool,
    provenance: dict[str, Any],
) -> PreparedStore:
    """Write patches, manifest, config, summary and figure into a new store, atomically."""
    import yaml

    from diffst.keys import StoreFile
    from diffst.preparation.figures import alignment_figure
    from diffst.preparation.store import StoreWriter, write_patches
    from diffst.preparation.summary import summary_markdown

    norm, coexpr = train_statistics(section, plan, cfg)
    with StoreWriter(out_dir, overwrite=overwrite) as writer:
        manifest = write_patches(writer, sample, section, plan, cfg)
        manifest.update(normalisation=norm.to_dict(), coexpr=coexpr, **provenance)
        writer.write_json(StoreFile.MANIFEST, manifest)
        writer.write_text(StoreFile.RESOLVED_CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        writer.write_text(StoreFile.SUMMARY, summary_markdown(manifest, section, plan, scan))
        alignment_figure(sample, section, plan, writer.path(StoreFile.ALIGNMENT_FIGURE.value))
        path = writer.commit()
    return PreparedStore(path, manifest)
