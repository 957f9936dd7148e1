"""The measured spot array as the high-resolution map (the paper's Visium / legacy-ST protocol).

On spot-based data (10x Visium, legacy Spatial Transcriptomics) there is nothing finer than the
spots, so Diff-ST uses the spot array itself as the HR map and sums ``k×k`` blocks of spots into
the LR input. This module builds, for one section,

* the HR map ``[G, H, W]`` of raw spot counts on the regular grid of
  :mod:`diffst.sections.spot_lattice`,
* the *measured* mask ``[H, W]``: grid cells holding a spot that is in the table, inside the
  tissue mask (when the sample has one) and has at least ``min_spot_counts`` counts. Cells that
  are not measured hold 0 counts and are excluded from pooling, the loss and the metrics;
* the LR map: sums over ``k×k`` blocks of *measured* spots, the number of spots that contributed
  to each LR cell and the LR mask (cells with at least one contributing spot);
* the lattice → µm affine map, with the pitch checked against the coordinates (or used to
  derive µm per pixel when the files do not state it).

``docs/spot_lattices.md`` documents the lattice mapping and the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from diffst.geometry import AffineTransform, GeometryError
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable, TissueMask
from diffst.sections.binning import GridGeometry
from diffst.sections.config import SpotHRConfig
from diffst.sections.spot_lattice import ROW_SPACING, LatticeFrame, grid_centres, lattice_to_grid

__all__ = [
    "DEFAULT_PITCH_UM",
    "SpotGrid",
    "SpotPooling",
    "fit_lattice_to_um",
    "grid_frame",
    "grid_image",
    "pool_spots",
    "spot_grid",
]

log = logging.getLogger(__name__)

#: Centre-to-centre spot distance per lattice, µm: legacy ST 200 µm, Visium 100 µm.
DEFAULT_PITCH_UM: dict[str, float] = {"square": 200.0, "hex": 100.0}

#: ``SpatialSample.metadata`` key a reader sets to False when the files give no pixel size.
UM_PER_PX_STATED = "um_per_px_stated"
#: ``SpatialSample.metadata`` key: how the reader got µm per pixel; ``"pitch …"`` means it was
#: derived from an assumed spot pitch (legacy ST), so the µm scale follows the pitch.
UM_PER_PX_SOURCE = "um_per_px_source"
#: Optional ``SpatialSample.metadata`` key: bool ``[n_spots]``, spot under tissue (legacy ST
#: ``selected``, Visium ``in_tissue``); False spots are masked.
SPOT_IN_TISSUE = "spot_in_tissue"


@dataclass
class SpotGrid:
    """One section's spot array on its regular grid.

    Attributes
    ----------
    hr
        ``[G, H, W]`` int32 raw counts; 0 where a cell is not measured.
    measured
        ``[H, W]`` bool, cells holding a spot that passed every filter.
    frame
        Lattice ↔ grid mapping (:class:`~diffst.sections.spot_lattice.LatticeFrame`).
    lattice_to_um
        ``[2, 3]`` affine map from ideal lattice positions (pitch units, see
        :func:`~diffst.sections.spot_lattice.grid_centres`) to the sample frame, µm.
    pitch_um
        Spot centre-to-centre distance, µm.
    image
        The sample's image with the transform used for the views (rescaled when µm per pixel
        was derived from the pitch), or None.
    genes
        Gene names of the ``G`` channels.
    counts_summary
        Spot and count bookkeeping for the prepare summary.
    """

    hr: np.ndarray
    measured: np.ndarray
    frame: LatticeFrame
    lattice_to_um: np.ndarray
    pitch_um: float
    image: SpatialImage | None
    genes: tuple[str, ...]
    counts_summary: dict[str, int | float] = field(default_factory=dict)

    def cell_centres_um(self, grid_rc: np.ndarray) -> np.ndarray:
        """Spot centres ``[n, 2]`` (x, y), µm, of grid cells ``[n, 2]`` ``(r, c)``."""
        ideal = grid_centres(grid_rc, self.frame)
        return ideal @ self.lattice_to_um[:, :2].T + self.lattice_to_um[:, 2]


@dataclass(frozen=True)
class SpotPooling:
    """LR map pooled from measured spots.

    Attributes
    ----------
    lr
        ``[G, h, w]`` int64 sums of counts over the measured spots of each ``k×k`` block.
    n_spots
        ``[h, w]`` int32 number of measured spots in each block (rates: ``lr / n_spots``).
    lr_mask
        ``[h, w]`` bool, blocks with at least one measured spot.
    """

    lr: np.ndarray
    n_spots: np.ndarray
    lr_mask: np.ndarray


def pool_spots(hr: np.ndarray, measured: np.ndarray, factor: int) -> SpotPooling:
    """Sum ``factor×factor`` blocks of the HR grid over measured spots only.

    Parameters
    ----------
    hr
        ``[G, H, W]`` counts (any numeric dtype).
    measured
        ``[H, W]`` bool; unmeasured cells never enter the sums, whatever value they hold.
    factor
        Block side ``k`` in grid cells; partial blocks at the bottom/right sum what exists.

    Returns
    -------
    :class:`SpotPooling` with ``h = ceil(H / k)``, ``w = ceil(W / k)``.
    """
    if hr.ndim != 3 or hr.shape[1:] != measured.shape:
        raise GeometryError(f"hr [G, H, W] {hr.shape} and measured [H, W] {measured.shape} differ")
    if factor < 1:
        raise GeometryError(f"pooling factor must be ≥ 1, got {factor}")
    g, h, w = hr.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    keep = np.zeros((hp, wp), dtype=bool)
    keep[:h, :w] = measured
    vals = np.zeros((g, hp, wp), dtype=np.int64)
    vals[:, :h, :w] = hr
    vals *= keep
    blocks = (hp // factor, factor, wp // factor, factor)
    lr = vals.reshape(g, *blocks).sum(axis=(2, 4))
    n_spots = keep.reshape(*blocks).sum(axis=(1, 3)).astype(np.int32)
    return SpotPooling(lr=lr, n_spots=n_spots, lr_mask=n_spots > 0)


def fit_lattice_to_um(ideal: np.ndarray, centres_um: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine map from ideal lattice positions to spot centres.

    Parameters
    ----------
    ideal
        ``[n, 2]`` positions in pitch units
        (:func:`~diffst.sections.spot_lattice.grid_centres`).
    centres_um
        ``[n, 2]`` measured centres (x, y), µm (or px: the pitch is then in px).

    Returns
    -------
    ``([2, 3] affine, pitch)``: the pitch is ``sqrt(|det|)`` of the linear part, the unit of
    ``centres_um``.

    Raises
    ------
    GeometryError
        Fewer than three non-collinear spots, or centres that do not lie on the lattice
        (RMS residual above a quarter pitch: array and pixel coordinates disagree).
    """
    design = np.hstack([ideal, np.ones((ideal.shape[0], 1))])
    if ideal.shape[0] < 3 or np.linalg.matrix_rank(design) < 3:
        raise GeometryError("need at least three non-collinear spots to fit the spot lattice")
    coef, *_ = np.linalg.lstsq(design, centres_um, rcond=None)
    affine = coef.T
    pitch = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    rms = float(np.sqrt(np.mean(np.sum((design @ coef - centres_um) ** 2, axis=1))))
    if not pitch > 0 or rms > 0.25 * pitch:
        raise GeometryError(
            f"spot centres do not follow the array coordinates (RMS residual {rms:.3g} vs "
            f"pitch {pitch:.3g}); the spot table's array and pixel coordinates disagree"
        )
    return affine, pitch


def _expected_pitch(table: SpotTable, lattice: str, cfg: SpotHRConfig) -> tuple[float, str]:
    if cfg.pitch_um is not None:
        return cfg.pitch_um, "spots.pitch_um"
    if table.pitch_um is not None:
        return float(table.pitch_um), f"{table.path or 'spot table'} pitch_um"
    return DEFAULT_PITCH_UM[lattice], f"the {lattice}-lattice default"


def _rescale_um(
    sample: SpatialSample, scale: float
) -> tuple[SpatialImage | None, TissueMask | None]:
    """Image and mask transforms for µm multiplied by ``scale`` (µm_new = scale · µm_old)."""
    shrink = AffineTransform(np.diag([1.0 / scale, 1.0 / scale, 1.0]))
    image = sample.image
    if image is not None:
        image = replace(image, um_to_px=shrink.compose(image.um_to_px))
    mask = sample.tissue_mask
    if mask is not None:
        mask = TissueMask(mask.mask, shrink.compose(mask.um_to_px))
    return image, mask


def _um_scale_stated(sample: SpatialSample) -> bool:
    """False when the µm frame of the sample rests on an assumed pitch, not on the files."""
    if sample.metadata.get(UM_PER_PX_STATED, True) is False:
        return False
    return not str(sample.metadata.get(UM_PER_PX_SOURCE, "")).startswith("pitch")


def _calibrate(
    sample: SpatialSample, table: SpotTable, ideal: np.ndarray, cfg: SpotHRConfig, lattice: str
) -> tuple[np.ndarray, float, SpatialImage | None, TissueMask | None]:
    """Fit lattice → µm; check the pitch, or derive µm from it when the files give no pixel size."""
    affine, measured = fit_lattice_to_um(ideal, table.centers_um)
    pitch, source = _expected_pitch(table, lattice, cfg)
    where = table.path or sample.source_files.get("spots") or sample.name
    if not _um_scale_stated(sample):
        derived = str(sample.metadata.get(UM_PER_PX_SOURCE, "")).startswith("pitch")
        if derived and table.pitch_um is not None:
            # the reader derived µm from this table's pitch and said so: one estimate per
            # section, rescaled only to a different spots.pitch_um (exact ratio, stated once)
            scale = pitch / float(table.pitch_um)
            if abs(scale - 1.0) <= 1e-12:
                return affine, pitch, sample.image, sample.tissue_mask
            measured = float(table.pitch_um)
        else:
            scale = pitch / measured
        image, mask = _rescale_um(sample, scale)
        if abs(scale - 1.0) > 1e-3:
            um_px = image.um_per_px if image is not None else float("nan")
            log.warning(
                "%s: the files do not state µm per pixel; assumed a spot pitch of %g µm (%s), "
                "giving %.4g µm/px — set spots.pitch_um if this is wrong",
                where,
                pitch,
                source,
                um_px,
            )
        return affine * scale, pitch, image, mask
    if abs(measured / pitch - 1.0) > cfg.pitch_tolerance:
        raise GeometryError(
            f"{where}: spot pitch from the coordinates is {measured:.4g} µm but {source} says "
            f"{pitch:g} µm ({abs(measured / pitch - 1):.0%} apart, more than "
            f"{cfg.pitch_tolerance:.0%}); check the pixel size or set spots.pitch_um"
        )
    return affine, pitch, sample.image, sample.tissue_mask


def _gene_columns(table: SpotTable, genes: Sequence[str]) -> np.ndarray:
    """Columns of ``genes``, named by the table's gene names or its second identifiers (ids
    first: they are unique where names may not be)."""
    index = {g: i for i, g in enumerate(table.genes)}
    index.update({g: i for i, g in enumerate(table.gene_ids)})
    missing = [g for g in genes if g not in index]
    if missing:
        raise InputError(
            f"{table.path or 'spot table'}: requested genes missing from the counts: {missing}"
        )
    return np.array([index[g] for g in genes], dtype=np.int64)


def _in_tissue(
    sample: SpatialSample, mask: TissueMask | None, centres_um: np.ndarray
) -> np.ndarray:
    flags = sample.metadata.get(SPOT_IN_TISSUE)
    n = centres_um.shape[0]
    selected = np.ones(n, dtype=bool) if flags is None else np.asarray(flags, dtype=bool)
    if selected.shape != (n,):
        raise InputError(
            f"sample {sample.name!r}: metadata {SPOT_IN_TISSUE} has shape {selected.shape}, "
            f"expected ({n},)"
        )
    if mask is None:
        return selected
    col_row = np.floor(mask.um_to_px.apply(centres_um)).astype(np.int64)
    h, w = mask.mask.shape
    inside = (col_row[:, 0] >= 0) & (col_row[:, 0] < w) & (col_row[:, 1] >= 0) & (col_row[:, 1] < h)
    out = np.zeros(n, dtype=bool)
    out[inside] = mask.mask[col_row[inside, 1], col_row[inside, 0]]
    return out & selected


def spot_grid(sample: SpatialSample, genes: Sequence[str], cfg: SpotHRConfig) -> SpotGrid:
    """Put a section's spots on their regular grid: HR counts, measured mask, µm geometry.

    Parameters
    ----------
    sample
        A spot-based sample (``sample.spots`` with ``array_coords`` and ``lattice``).
    genes
        The gene panel, in channel order (all must be in the table).
    cfg
        Spot options (pitch, low-count threshold).

    Returns
    -------
    :class:`SpotGrid`; ``counts_summary`` lists spots in the table, masked outside the tissue,
    masked for low counts (< ``min_spot_counts``) and measured.

    Raises
    ------
    InputError
        No spot table, no array coordinates, non-integer counts or missing genes.
    GeometryError
        Duplicate lattice positions or a pitch that disagrees with the coordinates.
    """
    table = sample.spots
    if table is None:
        raise InputError(f"sample {sample.name!r}: --hr spots needs spot counts, found transcripts")
    where = table.path or sample.name
    table.require_raw_counts()
    if table.array_coords is None or table.lattice is None:
        raise InputError(f"{where}: field array_coords/lattice missing; --hr spots needs a lattice")
    grid_rc, frame = lattice_to_grid(table.array_coords, table.lattice)
    affine, pitch, image, mask = _calibrate(
        sample, table, grid_centres(grid_rc, frame), cfg, table.lattice
    )
    centres_um = grid_centres(grid_rc, frame) @ affine[:, :2].T + affine[:, 2]
    totals = np.asarray(table.counts.sum(axis=1)).ravel()
    in_tissue = _in_tissue(sample, mask, centres_um)
    enough = totals >= cfg.min_spot_counts
    keep = in_tissue & enough
    counts = table.counts[:, _gene_columns(table, genes)].toarray()
    hr = np.zeros((len(genes), *frame.shape), dtype=np.int32)
    hr[:, grid_rc[keep, 0], grid_rc[keep, 1]] = np.round(counts[keep]).astype(np.int32).T
    measured = np.zeros(frame.shape, dtype=bool)
    measured[grid_rc[keep, 0], grid_rc[keep, 1]] = True
    summary: dict[str, int | float] = {
        "spots_in_table": int(table.n_spots),
        "spots_outside_tissue": int((~in_tissue).sum()),
        "spots_low_count": int((in_tissue & ~enough).sum()),
        "min_spot_counts": int(cfg.min_spot_counts),
        "spots_measured": int(keep.sum()),
        "grid_cells": int(frame.shape[0] * frame.shape[1]),
        "counts_kept": int(counts[keep].sum()),
        "counts_dropped": int(counts[~keep].sum()),
        "pitch_um": float(pitch),
    }
    return SpotGrid(hr, measured, frame, affine, pitch, image, tuple(genes), summary)


def grid_frame(
    grid: SpotGrid, factor: int, shape: tuple[int, int]
) -> tuple[GridGeometry, np.ndarray]:
    """Grid geometry in the grid frame and the ``[3, 3]`` map grid frame → sample µm.

    Parameters
    ----------
    grid
        The section's spot grid.
    factor
        Spots per LR cell side.
    shape
        ``(H, W)`` grid cells (may exceed the lattice's grid when padded).

    Returns
    -------
    ``GridGeometry`` anchored at ``(0, 0)`` (``hr_um`` = pitch: grid cell ``(r, c)`` covers
    ``[c·pitch, (c+1)·pitch) × [r·pitch, (r+1)·pitch)``) and the homogeneous ``[3, 3]`` matrix
    taking grid-frame ``[x_g, y_g, 1]`` to sample-frame ``[x_um, y_um, 1]``.
    """
    frame = grid.frame
    pitch = grid.pitch_um
    rs = ROW_SPACING[frame.lattice]
    row0, col0 = frame.origin_rc
    x_first = col0 / 2.0 + 0.25 if frame.lattice == "hex" else float(col0)
    corner = np.array([[1.0, 0.0, x_first - 0.5], [0.0, 1.0, (row0 - 0.5) * rs], [0, 0, 1.0]])
    to_lattice = np.diag([1.0 / pitch, rs / pitch, 1.0])
    affine = np.vstack([grid.lattice_to_um, [0.0, 0.0, 1.0]])
    return GridGeometry((0.0, 0.0), pitch, factor, shape), affine @ corner @ to_lattice


def grid_image(grid: SpotGrid, to_um: np.ndarray) -> SpatialImage:
    """The section image addressed in the grid frame (``to_um``: grid frame → µm)."""
    if grid.image is None:
        raise InputError("--hr spots needs the histology image of every section")
    return SpatialImage(
        grid.image.pixels,
        grid.image.channels,
        AffineTransform(to_um).compose(grid.image.um_to_px),
        grid.image.path,
        grid.image.kind,
    )
