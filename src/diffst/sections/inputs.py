"""A section as the model sees it: whole-section rasters, and the inputs of any window of it.

:class:`SectionInputs` holds one section at one geometry: HR counts (where the section has
transcripts or fine bins), tissue bins and the LR layer, either by pooling the HR map over each
LR cell (``grid``) or as (pseudo-)spots rasterised onto the LR grid (``visium``, ``spots``).
:func:`window_inputs` cuts the model's inputs of one window out of it — HR counts, tissue mask,
LR counts and mask, and the image views. ``diffst prepare`` writes these windows as training
patches and ``diffst predict`` builds its tiles with the same function, so both see identical
inputs by construction.

Two builders make a :class:`SectionInputs`: :func:`build_section_inputs` from transcripts at a
:class:`~diffst.sections.config.PrepareConfig` (what ``prepare`` writes), and
:func:`checkpoint_section_inputs` for any sample at the geometry a checkpoint recorded
(transcripts through the same builder; real spots such as Visium; bin arrays such as Visium HD).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.geometry import GeometryError
from diffst.io.sample import InputError, SpatialSample
from diffst.sections.binning import (
    BinningStats,
    GridGeometry,
    SourceScan,
    SparseCounts,
    bin_transcripts_sparse,
    bin_transcripts_with_stats,
    pool_counts,
    pool_grid,
    pool_window,
    rasterise_spots,
    scan_transcripts,
    spot_sums_from_transcripts,
    visium_lattice,
)
from diffst.sections.config import PrepareConfig, ViewConfig
from diffst.sections.tiling import tissue_mask_bins

if TYPE_CHECKING:
    from diffst.io.sample import SpatialImage
    from diffst.sections.stain import StainTransform

_log = logging.getLogger("diffst.sections")

__all__ = [
    "SectionInputs",
    "WindowInputs",
    "build_section_inputs",
    "check_outside",
    "checkpoint_section_inputs",
    "region_geometry",
    "section_geometry",
    "window_inputs",
    "with_bin_molecules",
    "with_empty_genes",
]


@dataclass
class SectionInputs:
    """Whole-section rasters at one geometry (what patches and tiles are cut from)."""

    genes: tuple[str, ...]
    geometry: GridGeometry  # section HR grid
    tissue: np.ndarray  # [H, W] bool in-tissue bins
    lr_layout: str  # "grid" (pooled HR), "visium" (pseudo-spots) or "spots" (measured spots)
    hr: np.ndarray | SparseCounts | None = None  # [G, H, W] HR counts (dense or sparse)
    stats: BinningStats | None = None  # molecules kept / dropped (transcripts)
    spot_centres_um: np.ndarray | None = None  # [n, 2] spots (LR cells for "grid"), µm
    spot_counts: np.ndarray | None = None  # [n, G] their counts
    spot_diameter_um: float = 55.0  # spot diameter, or LR cell side for "grid", µm
    spot_shape: str = "circle"  # "circle" | "square"
    spot_pitch_um: float = 100.0  # lattice pitch, µm (LR rasterisation reach)
    lr_grid: np.ndarray | None = None  # [G, h, w] LR cell counts of a grid layout without ``hr``

    @property
    def spots(self) -> tuple[np.ndarray, np.ndarray]:
        """``(centres µm [n, 2], counts [n, G])`` of the measured (pseudo-)spots, or of the
        in-tissue LR cells of a grid layout (sections built for a checkpoint)."""
        if self.spot_centres_um is None or self.spot_counts is None:
            raise ValueError("this section carries no spot table (a grid layout built by prepare)")
        return self.spot_centres_um, self.spot_counts

    @property
    def lr_bins(self) -> float:
        """HR bins covered by one LR value (``factor²`` or the spot area in bins)."""
        if self.lr_layout == "visium":
            return math.pi * (self.spot_diameter_um / 2) ** 2 / self.geometry.hr_um**2
        return float(self.geometry.factor**2)

    def lr_window(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """LR counts ``[G, p, p]`` float32 and mask ``[p, p]`` bool of the HR window at
        ``(row, col)`` of side ``size`` bins (``p = ceil(size / factor)``).

        Grid layouts pool the window itself, so HR and LR totals agree exactly per window;
        spot layouts rasterise the spots onto the window's LR cells.
        """
        if self.lr_layout != "grid":
            assert self.spot_centres_um is not None and self.spot_counts is not None
            sub = self.geometry.sub_grid(row, col, size)
            return rasterise_spots(
                self.spot_counts,
                self.spot_centres_um,
                self.spot_diameter_um,
                sub,
                self.spot_pitch_um,
            )
        if self.hr is None and self.lr_grid is not None:
            return self._lr_grid_window(row, col, size)
        assert self.hr is not None
        return pool_window(self.hr, self.tissue, self.geometry.factor, row, col, size)

    def _lr_grid_window(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lr_window` from the LR cell counts (windows on whole LR cells only): the same
        values :func:`~diffst.sections.binning.pool_window` pools from the HR map."""
        assert self.lr_grid is not None
        f = self.geometry.factor
        if row % f or col % f or size % f:
            raise ValueError(
                f"window ({row}, {col}) of {size} bins is not on whole LR cells of {f} bins; "
                "this section keeps LR cell counts only (build it with hr_map=True)"
            )
        p = size // f
        a, b = row // f, col // f
        block = self.lr_grid[:, a : a + p, b : b + p]
        lr = np.zeros((block.shape[0], p, p), dtype=np.float32)
        lr[:, : block.shape[1], : block.shape[2]] = block
        mask = np.zeros((p, p), dtype=bool)
        pooled = pool_grid(self.tissue[row : row + size, col : col + size], f) > 0
        mask[: pooled.shape[0], : pooled.shape[1]] = pooled
        return lr, mask

    def lr_section(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole-section LR raster ``[G, h, w]`` and mask ``[h, w]`` (for figures)."""
        if self.lr_layout == "grid":
            f = self.geometry.factor
            if self.hr is None and self.lr_grid is not None:
                return self.lr_grid.astype(np.float32), pool_grid(self.tissue, f) > 0
            assert self.hr is not None
            return pool_counts(self.hr, f).astype(np.float32), pool_grid(self.tissue, f) > 0
        assert self.spot_centres_um is not None and self.spot_counts is not None
        return rasterise_spots(
            self.spot_counts,
            self.spot_centres_um,
            self.spot_diameter_um,
            self.geometry,
            self.spot_pitch_um,
        )


@dataclass
class WindowInputs:
    """The model's inputs of one ``size × size`` window (raw counts; image views as uint8)."""

    origin_um: tuple[float, float]  # (x, y) of the window's top-left corner, µm
    lr: np.ndarray  # [G, p, p] float32 LR counts
    lr_mask: np.ndarray  # [p, p] bool, LR cells holding a measurement
    tissue: np.ndarray  # [size, size] bool in-tissue bins
    hr: np.ndarray | None = None  # [G, size, size] HR counts (a view; None without an HR map)
    tissue_view: np.ndarray | None = None  # [C, S, S] uint8 tissue-level view
    cells: np.ndarray | None = None  # [n², C, t, t] uint8 cell-level tiles
    cell_score: np.ndarray | None = None  # [n²] information content of the tiles


def window_inputs(
    section: SectionInputs,
    row: int,
    col: int,
    size: int,
    *,
    image: SpatialImage | None = None,
    views: ViewConfig | None = None,
    ranges: np.ndarray | None = None,
    stain: StainTransform | None = None,
) -> WindowInputs:
    """Cut the window whose top-left HR bin is ``(row, col)`` out of ``section``.

    Parameters
    ----------
    section
        Whole-section rasters.
    row, col, size
        Top-left HR bin and side of the window, in HR bins.
    image, views, ranges, stain
        The section image, the view layout, the ``[C, 2]`` intensity range of
        :func:`~diffst.sections.views.intensity_range` and the section's colour normalisation
        (:func:`~diffst.sections.views.section_stain`, or ``None``); without an image no views
        are cut.
    """
    from diffst.sections.views import image_views

    row, col = int(row), int(col)
    origin = section.geometry.sub_grid(row, col, size).origin_um
    lr, lr_mask = section.lr_window(row, col, size)
    window = WindowInputs(
        origin_um=origin,
        lr=lr,
        lr_mask=lr_mask,
        tissue=section.tissue[row : row + size, col : col + size],
        hr=None if section.hr is None else section.hr[:, row : row + size, col : col + size],
    )
    if image is not None:
        if views is None:
            raise ConfigError("window_inputs: an image needs its view layout (views)")
        window.tissue_view, window.cells, window.cell_score = image_views(
            image, origin, size, section.geometry, views, ranges=ranges, stain=stain
        )
    return window


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
    hr_map: bool = True,
) -> SectionInputs:
    """HR counts, tissue mask and the LR layer of a whole section at ``geometry``.

    ``hr_map=False`` keeps no HR counts (``hr`` is ``None``): the molecules are counted per LR
    cell directly (``lr_grid``, ``factor²`` times smaller), which is all a prediction needs.
    Otherwise ``cfg.hr_storage`` decides between a dense ``[G, H, W]`` map and a
    :class:`~diffst.sections.binning.SparseCounts` (``auto``: sparse above ``cfg.dense_hr_gib``).

    Raises :class:`InputError` when the sample has no transcripts or no tissue and
    :class:`GeometryError` when more than ``cfg.max_outside_fraction`` of the panel's molecules
    fall outside the image (``scan``, when given, adds the transcripts' extent to the message).
    """
    if sample.transcripts is None:
        raise InputError(
            f"sample {sample.name!r}: transcripts are needed for the HR map (spot tables "
            "alone cannot be binned)"
        )
    dense_gib = 4 * len(genes) * geometry.shape_hr[0] * geometry.shape_hr[1] / 2**30
    sparse = cfg.hr_storage == "sparse" or (
        cfg.hr_storage == "auto" and dense_gib > cfg.dense_hr_gib
    )
    if hr_map and sparse:
        _log.info(
            "HR counts held sparse (%d genes × %d × %d bins: %.1f GiB dense)",
            len(genes), *geometry.shape_hr, dense_gib,
        )  # fmt: skip
        counts: np.ndarray | SparseCounts
        counts, stats, density = bin_transcripts_sparse(
            sample.transcripts, genes, geometry, density=cfg.tissue.source != "mask",
            max_chunk=cfg.chunk_size,
        )  # fmt: skip
    else:
        counts, stats, density = bin_transcripts_with_stats(
            sample.transcripts,
            genes,
            geometry,
            density=cfg.tissue.source != "mask",
            max_chunk=cfg.chunk_size,
            pool=1 if hr_map else geometry.factor,
        )
    check_outside(sample, stats, cfg, scan)
    tissue = tissue_mask_bins(sample, geometry, cfg.tissue, density=density)
    section = SectionInputs(
        genes, geometry, tissue, cfg.lr, hr=counts if hr_map else None, stats=stats,
        lr_grid=None if hr_map or isinstance(counts, SparseCounts) else counts,
    )  # fmt: skip
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


def _lr_layout(meta: dict[str, Any]) -> tuple[str, float, float]:
    """``(lr_mode, spot diameter µm, spot pitch µm)`` recorded in the store manifest's geometry."""
    geo = meta["geometry"]
    missing = [k for k in ("lr_mode", "spot_diameter_um", "spot_pitch_um") if k not in geo]
    if missing:
        raise InputError(f"checkpoint store_meta: field geometry lacks {missing}")
    mode = str(geo["lr_mode"])
    if mode not in ("grid", "visium"):
        raise ConfigError(
            f"checkpoint store_meta: geometry.lr_mode {mode!r}: this model was trained on measured "
            "spot arrays (HR = spots, LR = pooled spots), so it has no µm grid of its own; "
            "`diffst predict` runs it below the spot pitch (diffst.inference.subspots) and "
            "`diffst benchmark` scores it"
        )
    return mode, float(geo["spot_diameter_um"]), float(geo["spot_pitch_um"])


def _spot_tissue(
    centres_um: np.ndarray, pitch_um: float, lattice: str | None, geometry: GridGeometry
) -> np.ndarray:
    """``[H, W]`` bins inside the union of the spots' lattice (Voronoi) cells."""
    from scipy.spatial import cKDTree

    reach = pitch_um / np.sqrt(3.0) if lattice != "square" else pitch_um / np.sqrt(2.0)
    xs, ys = geometry.bin_centres_um()
    gx, gy = np.meshgrid(xs, ys)
    dist, _ = cKDTree(centres_um).query(np.column_stack([gx.ravel(), gy.ravel()]), k=1)
    return (dist <= reach).reshape(geometry.shape_hr)


def _inputs_from_spots(
    sample: SpatialSample,
    genes: tuple[str, ...],
    hr_um: float,
    factor: int,
    region_um: tuple[float, float, float, float] | None = None,
) -> SectionInputs:
    """Real spot data (e.g. Visium): the measured spots give the LR map of every tile."""

    table = sample.spots
    assert table is not None
    centres = np.asarray(table.centers_um, dtype=np.float64)
    pitch = float(table.pitch_um or table.diameter_um)
    margin = max(pitch, table.diameter_um) / 2
    lo, hi = centres.min(axis=0) - margin, centres.max(axis=0) + margin
    geometry = GridGeometry.covering((lo[0], lo[1], hi[0], hi[1]), hr_um, factor)
    counts = _spot_counts(table, genes)
    if region_um is not None:  # the region's grid, and the spots that reach into it
        geometry = region_geometry(geometry, region_um)
        x0, y0, x1, y1 = geometry.extent_um()
        reach = pitch + table.diameter_um
        near = (centres[:, 0] >= x0 - reach) & (centres[:, 0] <= x1 + reach)
        near &= (centres[:, 1] >= y0 - reach) & (centres[:, 1] <= y1 + reach)
        if not near.any():
            raise InputError(f"{table.path or sample.name}: no spot within region {region_um} µm")
        counts, centres = counts[near], centres[near]
    tissue = _spot_tissue(centres, pitch, table.lattice, geometry)
    if sample.tissue_mask is not None:
        tissue &= tissue_mask_bins(sample, geometry)
    return SectionInputs(
        genes, geometry, tissue, "spots", spot_centres_um=centres, spot_counts=counts.toarray(),
        spot_diameter_um=float(table.diameter_um), spot_shape=table.shape, spot_pitch_um=pitch,
    )  # fmt: skip


def _inputs_from_transcripts(
    sample: SpatialSample,
    genes: tuple[str, ...],
    meta: dict[str, Any],
    region_um: tuple[float, float, float, float] | None = None,
    hr_map: bool = True,
) -> SectionInputs:
    """HR platforms: the section rasters of ``diffst prepare`` (same grid, tissue, pseudo-spots);
    without ``hr_map`` only the LR cell counts are kept (see :func:`build_section_inputs`)."""
    assert sample.transcripts is not None
    geo = meta["geometry"]
    layout, diameter, pitch = _lr_layout(meta)
    patch = int(meta["hr_size"])
    pcfg = PrepareConfig(
        hr_um=float(geo["hr_um"]),
        factor=int(geo["factor"]),
        lr=layout,  # type: ignore[arg-type]
        spot_diameter_um=diameter,
        spot_pitch_um=pitch,
        patch=patch,
        stride=patch,
        hr_storage="dense",  # the benchmark scores against hr as an array
    )
    scan = scan_transcripts(sample.transcripts)
    geometry = section_geometry(sample, pcfg, scan)
    if region_um is not None:  # the region's grid, and only the molecules on it
        geometry = region_geometry(geometry, region_um)
        sample = dataclasses.replace(
            sample, transcripts=_molecules_within(sample.transcripts, geometry.extent_um())
        )
    section = build_section_inputs(sample, genes, geometry, pcfg, scan, hr_map=hr_map)
    if layout == "visium":
        assert section.spot_centres_um is not None and section.spot_counts is not None
        return SectionInputs(
            genes, geometry, section.tissue, "visium", hr=section.hr, stats=section.stats,
            spot_centres_um=section.spot_centres_um,
            spot_counts=section.spot_counts.astype(np.float64),
            spot_diameter_um=diameter, spot_shape="circle", spot_pitch_um=pitch,
        )  # fmt: skip
    return _grid_inputs(genes, geometry, section.tissue, section.hr, section.lr_grid)


def _grid_inputs(
    genes: tuple[str, ...], geometry: GridGeometry, tissue: np.ndarray,
    hr: np.ndarray | SparseCounts | None, lr_grid: np.ndarray | None = None,
) -> SectionInputs:  # fmt: skip
    """Grid-pooling layout: the in-tissue LR cells are the measured (square) spots (their counts
    pooled from ``hr``, or given per LR cell as ``lr_grid``)."""

    f = geometry.factor
    a, b = np.nonzero(pool_grid(tissue, f) > 0)
    x0, y0 = geometry.origin_um
    centres = np.column_stack([x0 + (b + 0.5) * geometry.lr_um, y0 + (a + 0.5) * geometry.lr_um])
    pooled = pool_counts(hr, f) if hr is not None else lr_grid
    if pooled is None:
        raise ValueError("_grid_inputs: give the HR counts or the LR cell counts")
    counts = pooled[:, a, b].T.astype(np.float64)
    lr_um = geometry.lr_um
    return SectionInputs(
        genes, geometry, tissue, "grid", hr=hr, spot_centres_um=centres, spot_counts=counts,
        spot_diameter_um=lr_um, spot_shape="square", spot_pitch_um=lr_um,
        lr_grid=None if hr is not None else lr_grid,
    )  # fmt: skip


def region_geometry(
    section: GridGeometry, region_um: tuple[float, float, float, float]
) -> GridGeometry:
    """The part of ``section``'s grid that covers ``region_um = (x0, y0, x1, y1)`` µm, snapped
    outwards to whole LR cells of the section's own LR grid (so the region's LR cells are the
    section's) and clipped to the section."""
    sx0, sy0, sx1, sy1 = section.extent_um()
    x0, y0, x1, y1 = map(float, region_um)
    if x1 <= sx0 or x0 >= sx1 or y1 <= sy0 or y0 >= sy1:
        raise InputError(
            f"predict.region_um {region_um}: outside the section (x {sx0:.1f}..{sx1:.1f}, "
            f"y {sy0:.1f}..{sy1:.1f} µm)"
        )
    lr, (ox, oy) = section.lr_um, section.origin_um
    h_lr, w_lr = section.shape_lr
    c0 = max(0, math.floor((x0 - ox) / lr))
    r0 = max(0, math.floor((y0 - oy) / lr))
    c1 = min(w_lr, math.ceil((x1 - ox) / lr))
    r1 = min(h_lr, math.ceil((y1 - oy) / lr))
    f = section.factor
    rows = min(section.shape_hr[0], r1 * f) - r0 * f
    cols = min(section.shape_hr[1], c1 * f) - c0 * f
    origin = (ox + c0 * lr, oy + r0 * lr)
    return GridGeometry(origin, section.hr_um, f, (rows, cols))


def _molecules_within(source: Any, extent: tuple[float, float, float, float]) -> Any:
    """``source`` streamed with only the molecules inside ``extent`` (x0, y0, x1, y1) µm."""
    from diffst.io.sample import ChunkedTranscripts, TranscriptChunk

    x0, y0, x1, y1 = extent

    def chunks() -> Any:
        for chunk in source.iter_chunks():
            x, y = np.asarray(chunk.x_um), np.asarray(chunk.y_um)
            keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
            yield TranscriptChunk(x[keep], y[keep], np.asarray(chunk.gene)[keep])

    return ChunkedTranscripts(source.genes, source.control, chunks, source.path)


def with_bin_molecules(sample: SpatialSample, hr_um: float) -> SpatialSample:
    """``sample`` with its bin array as molecules when it has no transcripts and its bins are
    no coarser than ``hr_um`` (Visium HD ``square_002um`` for HR bins of 2 µm and up): the
    transcript route then bins them — HR map, tissue density, grid or Visium-lattice LR — as
    it bins molecules. Other samples are returned unchanged."""
    spots = sample.spots
    if sample.transcripts is not None or spots is None or spots.n_spots == 0:
        return sample
    if float(spots.pitch_um or spots.diameter_um) > hr_um:
        return sample
    return dataclasses.replace(sample, transcripts=spots.as_molecules())


def with_empty_genes(sample: SpatialSample, names: tuple[str, ...] | list[str]) -> SpatialSample:
    """``sample`` with genes ``names`` added as genes without a single count or molecule.

    For a checkpoint gene that the section does not measure: every builder of model inputs then
    reads it as zeros, and the caller replaces its LR input with an imputed one (prediction
    flags such genes; :mod:`diffst.inference.setup`). Names the sample already has are an error.
    """
    names = tuple(str(n) for n in names)
    if not names:
        return sample
    have = set(sample.genes)
    if sample.spots is not None:
        have |= set(sample.spots.gene_ids)
    clash = [n for n in names if n in have]
    if clash:
        raise ValueError(f"with_empty_genes: the sample already has {clash}")
    extra = np.zeros(len(names), dtype=bool)
    transcripts, spots = sample.transcripts, sample.spots
    if transcripts is not None:
        transcripts = dataclasses.replace(  # type: ignore[type-var]
            transcripts,
            genes=(*transcripts.genes, *names),
            control=np.r_[np.asarray(transcripts.control, dtype=bool), extra],
        )
    if spots is not None:
        n = spots.counts.shape[0]
        spots = dataclasses.replace(
            spots,
            counts=sp.hstack([spots.counts, sp.csr_matrix((n, len(names)))], format="csr"),
            genes=(*spots.genes, *names),
            gene_ids=(*spots.gene_ids, *names) if spots.gene_ids else (),
            control=None if spots.control is None else np.r_[spots.control, extra],
        )
    return dataclasses.replace(sample, transcripts=transcripts, spots=spots)


def _spot_counts(table: Any, genes: tuple[str, ...]) -> sp.csr_matrix:
    """``[n, G]`` counts of ``genes`` (matched by id first, then by name), float64 CSR."""
    table.require_raw_counts()
    column = {g: k for k, g in enumerate(table.genes)}
    column.update({g: k for k, g in enumerate(table.gene_ids)})  # ids are unique, names may not be
    return sp.csr_matrix(table.counts[:, [column[g] for g in genes]], dtype=np.float64)


def checkpoint_section_inputs(
    sample: SpatialSample,
    genes: tuple[str, ...],
    meta: dict[str, Any],
    region_um: tuple[float, float, float, float] | None = None,
    hr_map: bool = True,
) -> SectionInputs:
    """Section grid, tissue bins, LR map and measured spots for a sample (no network work).

    Parameters
    ----------
    sample
        Section from any reader: transcripts (HR platforms) or spots (Visium and the like).
    genes
        Section gene names in checkpoint order.
    meta
        Checkpoint ``store_meta`` (geometry, normalisation, LR layout).
    region_um
        ``(x0, y0, x1, y1)`` µm: only this rectangle, snapped outwards to the section's LR grid
        (:func:`region_geometry`); molecules off it are not read into memory. LR cells and
        pseudo-spots at its edge see the molecules inside it only.
    hr_map
        Keep the HR counts of transcript samples (``hr``, 4 bytes per gene and HR bin: the
        truth that benchmarks score against). Prediction needs only the LR layer: without it a
        grid layout keeps its LR cell counts (``lr_grid``) and a Visium layout its spot sums.
    """
    layout, _, _ = _lr_layout(meta)
    spots = sample.spots
    if sample.transcripts is None and spots is not None and spots.n_spots == 0:
        raise InputError(f"{spots.path or sample.name}: field spots is empty (no tissue)")
    sample = with_bin_molecules(sample, float(meta["geometry"]["hr_um"]))
    if sample.transcripts is not None:
        inputs = _inputs_from_transcripts(sample, genes, meta, region_um, hr_map)
    else:
        if layout != "visium":
            _log.warning(
                "the checkpoint was trained with %s LR pooling; real spots are rasterised to its "
                "LR grid, train with `--lr visium` for spot data",
                layout,
            )
        geo = meta["geometry"]
        inputs = _inputs_from_spots(
            sample, genes, float(geo["hr_um"]), int(geo["factor"]), region_um
        )
    if not inputs.tissue.any():
        raise InputError(f"sample {sample.name!r}: no tissue bin found; nothing to predict")
    return inputs
