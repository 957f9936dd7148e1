"""``prepare``: a :class:`SpatialSample` → a patch store of paired HR/LR maps and image views.

The work is split in two reusable steps: :func:`build_section_inputs` turns a sample into
whole-section rasters (HR counts, LR layer, tissue mask) at a given geometry — ``predict``
tiles over the same object — and :func:`plan_patches` plus
:func:`diffst.prepare.store.write_patches` cut, split and write the patches.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffst import __version__
from diffst.config import ConfigError, to_dict
from diffst.data.transforms import NormStats, normalisation_stats
from diffst.geometry import GeometryError
from diffst.io.sample import InputError, SpatialSample
from diffst.prepare.binning import (
    BinningStats,
    GridGeometry,
    SourceScan,
    bin_transcripts_with_stats,
    gene_totals_in_bins,
    pool_window,
    rasterise_spots,
    scan_transcripts,
    spot_sums_from_transcripts,
    visium_lattice,
)
from diffst.prepare.coexpr import coexpression, train_bins_mask
from diffst.prepare.config import PrepareConfig
from diffst.prepare.tiling import SPLITS, patch_grid, split_blocks, tissue_mask_bins

__all__ = [
    "PatchPlan",
    "PreparedStore",
    "SectionInputs",
    "build_section_inputs",
    "check_outside",
    "plan_patches",
    "prepare",
    "section_geometry",
    "select_genes",
    "training_scan",
]


@dataclass
class SectionInputs:
    """Whole-section rasters at one geometry (what patches are cut from)."""

    genes: tuple[str, ...]
    geometry: GridGeometry
    hr: np.ndarray  # [G, H, W] int32 HR counts
    tissue: np.ndarray  # [H, W] bool in-tissue bins
    lr_mode: str  # "grid" or "visium"
    stats: BinningStats  # molecules kept / dropped
    spot_centres_um: np.ndarray | None = None  # [n, 2] Visium spot centres (x, y), µm
    spot_counts: np.ndarray | None = None  # [n, G] Visium spot sums
    spot_diameter_um: float = 55.0
    spot_pitch_um: float = 100.0

    @property
    def lr_bins(self) -> float:
        """HR bins covered by one LR value (``factor²`` or the spot area in bins)."""
        if self.lr_mode == "visium":
            return math.pi * (self.spot_diameter_um / 2) ** 2 / self.geometry.hr_um**2
        return float(self.geometry.factor**2)

    def lr_window(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """LR counts ``[G, p, p]`` float32 and mask ``[p, p]`` bool of the HR window at
        ``(row, col)`` of side ``size`` bins (``p = ceil(size / factor)``).

        Grid mode pools the window itself, so HR and LR totals agree exactly per window.
        """
        if self.lr_mode == "visium":
            assert self.spot_centres_um is not None and self.spot_counts is not None
            sub = self.geometry.sub_grid(row, col, size)
            return rasterise_spots(
                self.spot_counts,
                self.spot_centres_um,
                self.spot_diameter_um,
                sub,
                self.spot_pitch_um,
            )
        return pool_window(self.hr, self.tissue, self.geometry.factor, row, col, size)


def select_genes(sample: SpatialSample, cfg: PrepareConfig, scan: SourceScan) -> tuple[str, ...]:
    """The gene panel: ``cfg.gene_list`` (validated) or the top-``cfg.genes`` non-control genes
    by ``scan.totals`` (ties broken by the source order). :func:`plan_section` passes the totals
    of the training blocks only, so held-out blocks never influence the panel."""
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
    return tuple(names[k] for k in order[: cfg.genes])


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


def section_geometry(sample: SpatialSample, cfg: PrepareConfig, scan: SourceScan) -> GridGeometry:
    """The HR grid: the image extent when there is an image, else the transcripts' extent."""
    if sample.image is not None:
        extent = sample.image.extent_um()
    else:
        x0, y0, x1, y1 = scan.extent_um
        pad = 1e-6 * cfg.hr_um
        extent = (x0, y0, x1 + pad, y1 + pad)
    return GridGeometry.covering(extent, cfg.hr_um, cfg.factor)


def build_section_inputs(
    sample: SpatialSample,
    genes: tuple[str, ...],
    geometry: GridGeometry,
    cfg: PrepareConfig,
    scan: SourceScan | None = None,
) -> SectionInputs:
    """HR counts, tissue mask and the LR layer of a whole section at ``geometry``.

    Raises :class:`InputError` when the sample has no transcripts or no tissue and
    :class:`GeometryError` when more than ``cfg.max_outside_fraction`` of the panel's molecules
    fall outside the image (``scan``, when given, adds the transcripts' extent to the message).
    """
    if sample.transcripts is None:
        raise InputError(
            f"sample {sample.name!r}: transcripts are needed for the HR map (spot tables "
            "alone cannot be binned)"
        )
    hr, stats, density = bin_transcripts_with_stats(
        sample.transcripts,
        genes,
        geometry,
        density=cfg.tissue.source != "mask",
        max_chunk=cfg.chunk_size,
    )
    check_outside(sample, stats, cfg, scan)
    tissue = tissue_mask_bins(sample, geometry, cfg.tissue, density=density)
    section = SectionInputs(genes, geometry, hr, tissue, cfg.lr, stats)
    if cfg.lr == "visium":
        centres = visium_lattice(geometry, None, cfg.spot_pitch_um, cfg.spot_diameter_um)
        ij = np.floor((centres - np.asarray(geometry.origin_um)) / geometry.hr_um).astype(int)
        centres = centres[tissue[ij[:, 1], ij[:, 0]]] if len(centres) else centres
        section.spot_centres_um = centres
        section.spot_counts = spot_sums_from_transcripts(
            sample.transcripts, genes, centres, cfg.spot_diameter_um
        )
        section.spot_diameter_um = cfg.spot_diameter_um
        section.spot_pitch_um = cfg.spot_pitch_um
    return section


def check_outside(
    sample: SpatialSample, st: BinningStats, cfg: PrepareConfig, scan: SourceScan | None
) -> None:
    """Raise :class:`GeometryError` when too many panel molecules fall outside the image."""
    panel = st.kept + st.outside_grid
    if panel == 0:
        raise InputError(f"sample {sample.name!r}: no molecule of the gene panel was read")
    if st.outside_grid / panel <= cfg.max_outside_fraction or sample.image is None:
        return
    ix0, iy0, ix1, iy1 = sample.image.extent_um()
    tx0, ty0, tx1, ty1 = scan.extent_um if scan is not None else (np.nan,) * 4
    hint = ""
    if ty0 >= ix0 and ty1 <= ix1 and tx0 >= iy0 and tx1 <= iy1:
        hint = "; with x and y swapped they would fit: are the columns swapped?"
    raise GeometryError(
        f"{sample.transcripts.path if sample.transcripts else 'transcripts'}: "
        f"{st.outside_grid} of {panel} molecules ({st.outside_grid / panel:.1%}) have x_um/y_um "
        f"outside the image ({sample.image.path or 'image'}: x {ix0:.1f}..{ix1:.1f}, y "
        f"{iy0:.1f}..{iy1:.1f} µm at {sample.image.um_per_px:.4f} µm/px; transcripts x "
        f"{tx0:.1f}..{tx1:.1f}, y {ty0:.1f}..{ty1:.1f} µm). Check the µm-per-pixel and the "
        f"transform{hint}"
    )


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


def train_statistics(
    section: SectionInputs, plan: PatchPlan, cfg: PrepareConfig
) -> tuple[NormStats, dict[str, Any]]:
    """Normalisation statistics and co-expression from in-tissue bins of train patches only."""
    train = plan.split == 0
    bins = train_bins_mask(
        section.geometry.shape_hr, plan.rows[train], plan.cols[train], cfg.patch, section.tissue
    )
    counts = section.hr[:, bins]
    return normalisation_stats(counts, cfg.normalisation, section.lr_bins), coexpression(counts)


@dataclass
class PreparedStore:
    """A written store: its folder and manifest."""

    path: Path
    manifest: dict[str, Any]

    def n_patches(self, split: str) -> int:
        """Patches written to ``split``."""
        return int(self.manifest["splits"][split]["n_patches"])


def plan_section(
    sample: SpatialSample, cfg: PrepareConfig
) -> tuple[SourceScan, SectionInputs, PatchPlan]:
    """Scan the transcripts, choose the genes, rasterise the section and plan its patches.

    Everything :func:`prepare` computes before writing (``diffst prepare --dry-run`` prints it).
    """
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
    """``scan`` with per-gene totals counted over the training blocks of the split only.

    The gene panel is chosen from these totals (a panel picked from totals that include the
    held-out blocks would leak test information into the model's design). With a gene list, or
    when every block is for training, the totals are the section's.
    """
    blocks, row_edges, col_edges = split_blocks(
        geometry.shape_hr, geometry.hr_um, cfg.split, geometry.factor
    )
    train = blocks == SPLITS.index("train")
    if cfg.gene_list is not None or train.all():
        return scan
    assert sample.transcripts is not None
    rows = np.repeat(train, np.diff(row_edges), axis=0)
    bins = np.repeat(rows, np.diff(col_edges), axis=1)
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
    from diffst.prepare.store import check_target

    out_dir = Path(out_dir)
    if cfg.hr == "spots":
        from diffst.prepare.spots_api import prepare_spots

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
    from diffst.prepare.figures import alignment_figure
    from diffst.prepare.store import StoreWriter, write_patches
    from diffst.prepare.summary import summary_markdown

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
