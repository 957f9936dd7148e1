"""``diffst prepare --hr spots``: spot-array sections → the patch store of the transcript builder.

:func:`prepare_spots` handles one section (spatial block split), :func:`prepare_multi` several:
the gene panel and the normalisation / co-expression statistics come from the training sections
only, and a held-out section of the same tissue becomes the ``test`` split (cross-section
generalisation, used by ``diffst benchmark``). Store files and manifest keys are those of
:func:`diffst.preparation.api.prepare`, plus ``<split>/lr_spots.npy`` (measured spots per LR cell),
``<split>/section.npy`` (section index per patch) and ``manifest["spots"]``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffst._version import __version__
from diffst.config import ConfigError, sha256_file, to_dict
from diffst.data.transforms import normalisation_stats
from diffst.io.sample import InputError, SpatialSample
from diffst.keys import StoreFile
from diffst.preparation.coexpr import coexpression
from diffst.preparation.plan import PreparedStore, select_genes
from diffst.preparation.spots.patches import (
    SpotPatches,
    plan_spot_patches,
    spot_patches,
    spot_stain,
)
from diffst.preparation.store import FORMAT_VERSION, StoreWriter, check_target, stain_manifest
from diffst.sections.binning import SourceScan
from diffst.sections.config import PrepareConfig, SplitConfig
from diffst.sections.spot_grid import SpotGrid, grid_frame, spot_grid
from diffst.sections.tiling import SPLITS

__all__ = [
    "LR_SPOTS_FILE",
    "SECTION_FILE",
    "prepare_multi",
    "prepare_spots",
    "spot_gene_panel",
    "spot_plan_lines",
]

log = logging.getLogger(__name__)

LR_SPOTS_FILE = "lr_spots.npy"
"""``<split>/lr_spots.npy`` ``[N, p, p]`` uint8: measured spots summed into each LR cell."""
SECTION_FILE = "section.npy"
"""``<split>/section.npy`` ``[N]`` int16: index into ``manifest["spots"]["sections"]``."""

_ARRAYS = {
    StoreFile.HR: "hr",
    StoreFile.LR: "lr",
    StoreFile.MASK: "mask",
    StoreFile.LR_MASK: "lr_mask",
    StoreFile.TISSUE: "tissue",
    StoreFile.CELLS: "cells",
    StoreFile.CELL_SCORE: "cell_score",
    StoreFile.ORIGIN: "origin_um",
}


def spot_gene_panel(
    train: Sequence[SpatialSample], every: Sequence[SpatialSample], cfg: PrepareConfig
) -> tuple[str, ...]:
    """Gene panel from the training sections: ``cfg.gene_list`` or the top-``cfg.genes``
    non-control genes by total count summed over ``train``; every gene must exist in ``every``.
    """
    first = train[0]
    assert first.spots is not None
    common = [g for g in first.genes if all(g in s.genes for s in every)]
    totals = np.zeros(len(first.genes), dtype=np.int64)
    for sample in train:
        assert sample.spots is not None
        sums = np.asarray(sample.spots.counts.sum(axis=0)).ravel()
        index = {g: i for i, g in enumerate(sample.genes)}
        totals += np.array([round(sums[index[g]]) if g in index else 0 for g in first.genes])
    shared = np.isin(np.array(first.genes, dtype=object), np.array(common, dtype=object))
    scan = SourceScan(
        np.where(shared, totals, -1), (0.0, 0.0, 1.0, 1.0), int(totals.sum()), first.control
    )
    control = first.control | ~shared
    panel_source = dataclasses.replace(
        first, spots=dataclasses.replace(first.spots, control=control)
    )
    genes = select_genes(panel_source, cfg, scan)
    for sample in every:
        missing = [g for g in genes if g not in sample.genes]
        if missing:
            raise InputError(
                f"sample {sample.name!r}: panel genes missing from its counts: {missing}"
            )
    return genes


def _stats_counts(
    grids: list[SpotGrid], patches: list[SpotPatches], patch: int, splits: tuple[int, ...]
) -> np.ndarray:
    """``[G, n]`` counts of measured spots covered by patches of ``splits`` (each spot once)."""
    cols = []
    for grid, pt in zip(grids, patches, strict=True):
        covered = np.zeros(grid.measured.shape, dtype=bool)
        for r, c in pt.grid_rc[np.isin(pt.split, splits)]:
            covered[r : r + patch, c : c + patch] = True
        cols.append(grid.hr[:, covered & grid.measured])
    return np.concatenate(cols, axis=1)


def _statistics(
    grids: list[SpotGrid], patches: list[SpotPatches], roles: list[str], cfg: PrepareConfig
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Normalisation and co-expression from the train patches of the training sections.

    A store without train patches (a held-out section prepared alone, evaluated with the
    training store's statistics) records statistics of all its patches and says so.
    """
    train = [i for i, r in enumerate(roles) if r == "train"]
    counts = _stats_counts(
        [grids[i] for i in train], [patches[i] for i in train], cfg.spots.patch, (0,)
    )
    source = "train split of the training sections"
    if counts.shape[1] == 0:
        counts = _stats_counts(grids, patches, cfg.spots.patch, (0, 1, 2))
        source = "all patches: the store has no train split (evaluate it with a training store's)"
        log.warning(
            "prepare --hr spots: no train patches; normalisation statistics from %s", source
        )
    norm = normalisation_stats(counts, cfg.normalisation, float(cfg.spots.factor**2))
    return norm.to_dict(), coexpression(counts), source


def _write_split(writer: StoreWriter, name: str, k: int, patches: list[SpotPatches]) -> int:
    sel = [pt.split == k for pt in patches]
    for file, attr in _ARRAYS.items():
        parts = [getattr(pt, attr)[s] for pt, s in zip(patches, sel, strict=True)]
        out = np.concatenate(parts)
        writer.allocate(name, file, out.shape, out.dtype)[...] = out
    lr_spots = np.concatenate([pt.lr_spots[s] for pt, s in zip(patches, sel, strict=True)])
    np.save(writer.path(name, LR_SPOTS_FILE), lr_spots)
    section = np.concatenate([np.full(int(s.sum()), i, np.int16) for i, s in enumerate(sel)])
    np.save(writer.path(name, SECTION_FILE), section)
    return int(section.size)


def _section_entry(
    sample: SpatialSample, grid: SpotGrid, role: str, cfg: PrepareConfig
) -> dict[str, Any]:
    geometry, to_um = grid_frame(grid, cfg.spots.factor, grid.measured.shape)
    return {
        "name": sample.name,
        "platform": sample.platform,
        "role": role,
        "lattice": grid.frame.lattice,
        "origin_rc": list(grid.frame.origin_rc),
        "shape": list(grid.frame.shape),
        "parity": grid.frame.parity,
        "pitch_um": grid.pitch_um,
        "lattice_to_um": grid.lattice_to_um.tolist(),
        "grid_frame_to_um": to_um.tolist(),
        "grid_geometry": geometry.to_dict(),
        "counts": grid.counts_summary,
    }


def _geometry_entry(
    sample: SpatialSample, grids: list[SpotGrid], cfg: PrepareConfig
) -> dict[str, Any]:
    """Manifest ``geometry``: the grid frame (pitch-sized cells, anchored at 0) and patch sizes."""
    sc = cfg.spots
    shape = (max(g.measured.shape[0] for g in grids), max(g.measured.shape[1] for g in grids))
    geometry, _ = grid_frame(grids[0], sc.factor, shape)
    assert sample.spots is not None
    geo = geometry.to_dict()
    geo.update(
        patch=sc.patch,
        stride=sc.stride,
        lr_size=sc.patch // sc.factor,
        lr_mode="spots",
        lr_bins=float(sc.factor**2),
        spot_diameter_um=sample.spots.diameter_um,
        spot_pitch_um=grids[0].pitch_um,
        shape_lr=list(geometry.shape_lr),
    )
    return geo


def _manifest(
    samples: list[SpatialSample],
    grids: list[SpotGrid],
    roles: list[str],
    patches: list[SpotPatches],
    counts: dict[str, int],
    cfg: PrepareConfig,
) -> dict[str, Any]:
    sc = cfg.spots
    first = grids[0]
    assert first.image is not None
    sources = {
        f"{s.name}:{key}": {"path": str(path), "sha256": sha256_file(Path(path))}
        for s in samples
        for key, path in s.source_files.items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "sample": {"name": ",".join(s.name for s in samples), "platform": samples[0].platform},
        "genes": list(first.genes),
        "geometry": _geometry_entry(samples[0], grids, cfg),
        "image": {
            "um_per_px": first.image.um_per_px,
            "um_to_px": first.image.um_to_px.to_list(),
            "shape_hw": list(first.image.shape_hw),
            "kind": first.image.kind,
            "channels": list(cfg.views.channels or first.image.channels),
            "intensity_range": patches[0].intensity_range.tolist(),
        },
        "views": {
            "tissue_px": cfg.views.tissue_px,
            "cell_grid": cfg.views.cell_grid,
            "tile_px": cfg.views.tile_px,
        },
        "splits": {name: {"n_patches": counts[name]} for name in SPLITS},
        "split_blocks": {
            "block_spots": sc.split_block,
            "fractions": list(cfg.split.fractions),
            "seed": cfg.split.seed,
        },
        "patches": {k: sum(p.tally[k] for p in patches) for k in patches[0].tally},
        "tissue_fraction": float(np.mean([g.measured.mean() for g in grids])),
        "counts": {s.name: g.counts_summary for s, g in zip(samples, grids, strict=True)},
        "sources": sources,
        "spots": {
            "factor": sc.factor,
            "min_spot_counts": sc.min_spot_counts,
            "sections": [
                _section_entry(s, g, r, cfg) for s, g, r in zip(samples, grids, roles, strict=True)
            ],
        },
    }


_SUMMARY_COLUMNS = {
    "spots_in_table": "spots",
    "spots_outside_tissue": "outside tissue",
    "spots_low_count": "low count",
    "min_spot_counts": "min counts",
    "spots_measured": "measured",
    "counts_kept": "counts kept",
    "counts_dropped": "counts dropped",
}


def _summary(manifest: dict[str, Any]) -> str:
    lines = [f"# diffst prepare --hr spots: {manifest['sample']['name']}", ""]
    lines += [f"Genes ({len(manifest['genes'])}): {', '.join(manifest['genes'])}", ""]
    lines.append("| section | role | " + " | ".join(_SUMMARY_COLUMNS.values()) + " |")
    lines.append("|---" * (2 + len(_SUMMARY_COLUMNS)) + "|")
    for sec in manifest["spots"]["sections"]:
        cells = [str(sec["counts"][k]) for k in _SUMMARY_COLUMNS]
        lines.append(f"| {sec['name']} | {sec['role']} | " + " | ".join(cells) + " |")
    splits = ", ".join(f"{k} {v['n_patches']}" for k, v in manifest["splits"].items())
    lines += ["", f"Patches: {splits}", ""]
    return "\n".join(lines)


def _alignment_figure(samples: list[SpatialSample], grids: list[SpotGrid], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 4), squeeze=False)
    for ax, sample, grid in zip(axes[0], samples, grids, strict=True):
        assert grid.image is not None
        h, w = grid.image.shape_hw
        step = max(1, max(h, w) // 800)
        ax.imshow(
            np.asarray(grid.image.pixels[::step, ::step, :])[..., :3].squeeze(), extent=(0, w, h, 0)
        )
        cells = np.argwhere(np.ones(grid.frame.shape, dtype=bool))
        px = grid.image.um_to_px.apply(grid.cell_centres_um(cells))
        on = grid.measured[cells[:, 0], cells[:, 1]]
        ax.scatter(px[on, 0], px[on, 1], s=6, c="cyan", label="measured spots")
        ax.scatter(px[~on, 0], px[~on, 1], s=6, c="red", marker="x", label="masked / empty")
        ax.set_title(sample.name)
        ax.legend(loc="lower right", fontsize=7)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _prepare_sections(
    samples: list[SpatialSample],
    roles: list[str],
    splits: list[SplitConfig | int],
    out_dir: str | Path,
    cfg: PrepareConfig,
    command: str | None,
    overwrite: bool,
) -> PreparedStore:
    import yaml

    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    for sample in samples:
        if sample.spots is None or sample.image is None:
            raise InputError(f"sample {sample.name!r}: --hr spots needs spot counts and an image")
    train = [s for s, r in zip(samples, roles, strict=True) if r == "train"]
    genes = spot_gene_panel(train, samples, cfg)
    grids = [spot_grid(s, genes, cfg.spots) for s in samples]
    # the first training section's colours are the reference of every section's views
    reference = spot_stain(grids[roles.index("train")], cfg.views)
    patches = [
        spot_patches(g, cfg.spots, cfg.views, sp, stain=spot_stain(g, cfg.views, reference))
        for g, sp in zip(grids, splits, strict=True)
    ]
    norm, coexpr, stats_source = _statistics(grids, patches, roles, cfg)
    with StoreWriter(out_dir, overwrite=overwrite) as writer:
        counts = {name: _write_split(writer, name, k, patches) for k, name in enumerate(SPLITS)}
        for k, name in enumerate(SPLITS):
            if cfg.split.fractions[k] > 0 and counts[name] == 0:
                raise ConfigError(
                    f"split {name!r} is empty; lower spots.patch or spots.split_block, "
                    "or set its fraction to 0"
                )
        manifest = stain_manifest(
            _manifest(samples, grids, roles, patches, counts, cfg), cfg.views, reference
        )
        manifest.update(
            normalisation=norm,
            normalisation_source=stats_source,
            coexpr=coexpr,
            command=command,
            diffst_version=__version__,
            created_utc=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            seed=cfg.seed,
            config=to_dict(cfg),
        )
        writer.write_json(StoreFile.MANIFEST, manifest)
        writer.write_text(StoreFile.RESOLVED_CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        writer.write_text(StoreFile.SUMMARY, _summary(manifest))
        _alignment_figure(samples, grids, writer.path(StoreFile.ALIGNMENT_FIGURE.value))
        path = writer.commit()
    return PreparedStore(path, manifest)


def prepare_spots(
    sample: SpatialSample,
    out_dir: str | Path,
    cfg: PrepareConfig,
    *,
    command: str | None = None,
    overwrite: bool = False,
) -> PreparedStore:
    """One spot-array section → store, train/val/test by spatial blocks of ``spots.split_block``.

    Parameters
    ----------
    sample
        Visium / legacy-ST section with raw counts, array coordinates and an image.
    out_dir
        Store folder (written atomically).
    cfg
        Prepare configuration; ``cfg.spots`` holds the spot options (factor ``k``, patch in
        spots, pitch, low-count threshold).
    command, overwrite
        As for :func:`diffst.preparation.api.prepare`.
    """
    return _prepare_sections([sample], ["train"], [cfg.split], out_dir, cfg, command, overwrite)


def prepare_multi(
    train_samples: Sequence[SpatialSample],
    heldout_sample: SpatialSample,
    out_dir: str | Path,
    cfg: PrepareConfig,
    *,
    command: str | None = None,
    overwrite: bool = False,
) -> PreparedStore:
    """Several sections → one store for cross-section generalisation.

    The training sections give the ``train`` and ``val`` splits (spatial blocks, with the
    train/val fractions of ``cfg.split`` rescaled to sum to one), the gene panel and all
    statistics; every patch of ``heldout_sample`` goes to ``test``.
    """
    if not train_samples:
        raise ConfigError("prepare_multi: at least one training section is needed")
    f_train, f_val, _ = cfg.split.fractions
    if f_train + f_val <= 0:
        raise ConfigError("prepare_multi: split.fractions gives no share to train and val")
    fractions = (f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0)
    inner = SplitConfig(cfg.split.block_um, fractions, cfg.split.seed)
    samples = [*train_samples, heldout_sample]
    roles = ["train"] * len(train_samples) + ["heldout"]
    splits: list[SplitConfig | int] = [inner] * len(train_samples) + [SPLITS.index("test")]
    store_cfg = dataclasses.replace(cfg, split=inner)
    return _prepare_sections(samples, roles, splits, out_dir, store_cfg, command, overwrite)


def spot_plan_lines(sample: SpatialSample, cfg: PrepareConfig) -> list[str]:
    """What ``prepare --hr spots`` would do with a section (``--dry-run``): panel, grid, patches."""
    genes = spot_gene_panel([sample], [sample], cfg)
    grid = spot_grid(sample, genes, cfg.spots)
    plan = plan_spot_patches(grid, cfg.spots, cfg.split)
    c = grid.counts_summary
    return [
        f"# genes: {', '.join(genes)}",
        f"# grid: {grid.frame.shape} {grid.frame.lattice} lattice, pitch {grid.pitch_um:.4g} µm; "
        f"{c['spots_measured']} of {c['spots_in_table']} spots measured "
        f"({c['spots_outside_tissue']} outside tissue, {c['spots_low_count']} below "
        f"{c['min_spot_counts']} counts)",
        "# patches: "
        + ", ".join(f"{n} {int((plan.split == k).sum())}" for k, n in enumerate(SPLITS)),
    ]
