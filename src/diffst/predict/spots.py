"""Measured spots: the section's LR input built from them, and predicted HR bins ↔ spots
(re-aggregation, consistency and total-preserving projection).

:func:`build_section_inputs` turns a sample into the section grid, tissue bins and the
(pseudo-)spots whose rasterisation is each tile's LR input, made as in training: transcript
samples reuse ``diffst prepare``'s section rasters (grid pooling or the Visium lattice); spot
samples (real Visium) rasterise the measured spots onto the checkpoint's LR grid.

A bin belongs to a spot when the bin's centre lies inside the spot (circle of the spot diameter,
or square of that side). A bin inside several spots is given to the nearest spot centre, so every
bin belongs to at most one spot and the projection below conserves each spot's total exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from diffst.config import ConfigError
from diffst.io.sample import InputError, SpatialSample
from diffst.predict.uncertainty import Stat

if TYPE_CHECKING:
    from diffst.prepare.binning import GridGeometry

_log = logging.getLogger("diffst.predict")

__all__ = [
    "SectionInputs",
    "aggregate_to_spots",
    "assign_bins_to_spots",
    "build_section_inputs",
    "project_mean",
    "project_to_spots",
    "spot_consistency",
    "spot_membership",
    "spot_projection",
    "spot_report",
]


def assign_bins_to_spots(
    centres_um: np.ndarray,
    diameter_um: float,
    shape: Literal["circle", "square"],
    origin_um: tuple[float, float],
    hr_um: float,
    shape_hr: tuple[int, int],
    bin_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Spot index of every HR bin.

    Parameters
    ----------
    centres_um
        ``[n, 2]`` spot centres ``(x, y)`` in µm.
    diameter_um
        Spot diameter (circle) or side (square), µm.
    shape
        ``"circle"`` or ``"square"``.
    origin_um, hr_um, shape_hr
        Section grid: top-left corner ``(x0, y0)`` µm, bin side µm, ``(H, W)`` bins.
    bin_mask
        Optional ``[H, W]`` bool; bins outside it are never assigned.

    Returns
    -------
    np.ndarray
        ``[H, W]`` int64, spot index of each bin or ``-1`` for bins in no spot.
    """
    h, w = shape_hr
    x0, y0 = origin_um
    radius = 0.5 * float(diameter_um)
    best = np.full((h, w), np.inf)
    spot_of_bin = np.full((h, w), -1, dtype=np.int64)
    for s, (cx, cy) in enumerate(np.asarray(centres_um, dtype=np.float64)):
        j0 = max(int(np.floor((cx - radius - x0) / hr_um)), 0)
        j1 = min(int(np.ceil((cx + radius - x0) / hr_um)) + 1, w)
        i0 = max(int(np.floor((cy - radius - y0) / hr_um)), 0)
        i1 = min(int(np.ceil((cy + radius - y0) / hr_um)) + 1, h)
        if i0 >= i1 or j0 >= j1:
            continue
        dx = x0 + (np.arange(j0, j1) + 0.5) * hr_um - cx
        dy = y0 + (np.arange(i0, i1) + 0.5) * hr_um - cy
        dist = np.hypot(dy[:, None], dx[None, :])
        if shape == "circle":
            inside = dist <= radius
        else:
            inside = (np.abs(dy)[:, None] <= radius) & (np.abs(dx)[None, :] <= radius)
        closer = inside & (dist < best[i0:i1, j0:j1])
        best[i0:i1, j0:j1][closer] = dist[closer]
        spot_of_bin[i0:i1, j0:j1][closer] = s
    if bin_mask is not None:
        spot_of_bin[~np.asarray(bin_mask, dtype=bool)] = -1
    return spot_of_bin


def spot_membership(spot_of_bin: np.ndarray, n_spots: int) -> sp.csr_matrix:
    """Sparse ``[n_spots, H·W]`` 0/1 matrix: row ``s`` marks the (row-major) bins of spot ``s``."""
    flat = spot_of_bin.ravel()
    bins = np.flatnonzero(flat >= 0)
    data = np.ones(bins.size, dtype=np.float64)
    return sp.csr_matrix((data, (flat[bins], bins)), shape=(n_spots, flat.size))


def aggregate_to_spots(values: np.ndarray, membership: sp.csr_matrix) -> np.ndarray:
    """Sum bins into spots.

    Parameters
    ----------
    values
        ``[G, H, W]`` per-bin values (counts per bin). Bins in no spot may hold NaN.
    membership
        From :func:`spot_membership`.

    Returns
    -------
    np.ndarray
        ``[n_spots, G]`` float64 sums; spots that contain no bin get 0.
    """
    g = values.shape[0]
    flat = np.asarray(values, dtype=np.float64).reshape(g, -1)
    return np.asarray(membership @ flat.T)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spot_consistency(
    predicted: np.ndarray,
    measured: np.ndarray,
    genes: tuple[str, ...] | list[str],
    bins_per_spot: np.ndarray,
) -> dict[str, object]:
    """Agreement of re-aggregated predictions with the measured spot counts.

    Parameters
    ----------
    predicted, measured
        ``[n_spots, G]`` predicted spot sums and measured counts.
    genes
        Gene names, length ``G``.
    bins_per_spot
        ``[n_spots]`` number of predicted bins in each spot; spots without bins are ignored.

    Returns
    -------
    dict
        ``pcc`` (gene → Pearson r across spots, NaN for genes constant over spots), ``mean_pcc``,
        ``median_pcc`` (over genes with a defined r), ``n_spots`` (spots used), ``n_spots_empty``
        (spots with no predicted bin), ``total_ratio`` (Σ predicted / Σ measured over used spots).
    """
    used = np.asarray(bins_per_spot) > 0
    p, m = predicted[used], measured[used]
    pcc = (
        {str(gene): _pearson(p[:, k], m[:, k]) for k, gene in enumerate(genes)}
        if used.sum() > 1
        else {}
    )
    finite = np.array([v for v in pcc.values() if np.isfinite(v)])
    total_m = float(m.sum())
    return {
        "pcc": pcc,
        "mean_pcc": float(finite.mean()) if finite.size else float("nan"),
        "median_pcc": float(np.median(finite)) if finite.size else float("nan"),
        "n_spots": int(used.sum()),
        "n_spots_empty": int((~used).sum()),
        "total_ratio": float(p.sum() / total_m) if total_m > 0 else float("nan"),
    }


def spot_projection(
    mean: np.ndarray, spot_of_bin: np.ndarray, measured: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``(scale, shift)`` ``[G, H, W]`` that give each spot its measured total per gene.

    For spot ``s`` and gene ``g`` with predicted total ``P > 0`` over its bins the spot's bins get
    ``scale = M / P`` (``M`` measured) and shift 0; where ``P = 0`` the measured count is spread
    evenly (``scale = 1``, ``shift = M / n_bins``). Bins belonging to no spot keep scale 1, shift 0,
    so ``mean·scale + shift`` is the projected mean.

    Parameters
    ----------
    mean
        ``[G, H, W]`` non-negative point prediction.
    spot_of_bin
        ``[H, W]`` spot index of each bin, −1 for none (:func:`assign_bins_to_spots`).
    measured
        ``[n_spots, G]`` measured counts.
    """
    n_spots, n_genes = measured.shape
    flat_spot = spot_of_bin.ravel()
    bins = np.flatnonzero(flat_spot >= 0)
    owner = flat_spot[bins]
    n_bins = np.bincount(owner, minlength=n_spots).astype(np.float64)
    flat = mean.reshape(n_genes, -1)
    scale = np.ones(flat.shape, dtype=np.float64)
    shift = np.zeros(flat.shape, dtype=np.float64)
    for g in range(n_genes):
        total = np.bincount(owner, weights=flat[g, bins].astype(np.float64), minlength=n_spots)
        target = np.asarray(measured[:, g], dtype=np.float64)
        has_total = total > 0
        factor = np.where(has_total, target / np.where(has_total, total, 1.0), 1.0)
        even = np.where(has_total, 0.0, target / np.maximum(n_bins, 1.0))
        scale[g, bins] = factor[owner]
        shift[g, bins] = even[owner]
    return scale.reshape(mean.shape), shift.reshape(mean.shape)


def project_to_spots(
    stats: np.ndarray, spot_of_bin: np.ndarray, measured: np.ndarray
) -> np.ndarray:
    """Rescale bins so that each spot's predicted total per gene equals its measurement.

    Every statistic of a spot's bins is moved by :func:`spot_projection` of the mean: multiplied
    by ``M / P`` where the spot's predicted total ``P`` is positive; where ``P = 0`` but ``M > 0``
    the mean is set to ``M / n_bins`` uniformly and the quantiles and the samples' mean are
    shifted by the same amount (std unchanged). Bins belonging to no spot are left untouched.

    Parameters
    ----------
    stats
        ``[5, G, H, W]`` statistics (axis 0 ordered as :class:`~diffst.predict.uncertainty.Stat`;
        the scale comes from ``MEAN`` and is applied to every other statistic).
    spot_of_bin
        ``[H, W]`` from :func:`assign_bins_to_spots`.
    measured
        ``[n_spots, G]`` measured counts.

    Returns
    -------
    np.ndarray
        Projected copy of ``stats`` (same dtype).
    """
    out = stats.copy()
    scale, shift = spot_projection(stats[Stat.MEAN], spot_of_bin, measured)
    for stat in (Stat.MEAN, Stat.Q05, Stat.Q95, Stat.SAMPLE_MEAN):
        out[stat] = stats[stat].astype(np.float64) * scale + shift
    out[Stat.STD] = stats[Stat.STD].astype(np.float64) * scale
    return out


@dataclass
class SectionInputs:
    """The section the tiles are cut from: grid, tissue, measured (pseudo-)spots, LR source."""

    geometry: GridGeometry  # section HR grid (hr_um and factor of the checkpoint)
    tissue: np.ndarray  # [H, W] bool, bins predicted and written
    lr_layout: str  # "grid" (pooled HR), "visium" (pseudo-spots) or "spots" (measured spots)
    spot_centres_um: np.ndarray  # [n, 2] spots (LR cells for "grid"), µm
    spot_counts: np.ndarray  # [n, G] their counts
    spot_diameter_um: float  # spot diameter, or LR cell side for "grid", µm
    spot_shape: str  # "circle" | "square"
    spot_pitch_um: float  # lattice pitch, µm (LR rasterisation reach)
    hr: np.ndarray | None = None  # [G, H, W] binned HR counts (transcripts, bin arrays)

    def lr_window(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw LR counts ``[G, p, p]`` float32 and mask ``[p, p]`` of the HR window at
        ``(row, col)`` with side ``size`` bins, made as in training (``p = ceil(size/factor)``):
        grid pooling of the window, or the spots rasterised onto the window's LR cells."""
        from diffst.prepare.binning import pool_window, rasterise_spots

        if self.lr_layout != "grid":
            sub = self.geometry.sub_grid(row, col, size)
            return rasterise_spots(
                self.spot_counts,
                self.spot_centres_um,
                self.spot_diameter_um,
                sub,
                self.spot_pitch_um,
            )
        assert self.hr is not None
        return pool_window(self.hr, self.tissue, self.geometry.factor, row, col, size)

    def lr_section(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole-section LR raster ``[G, h, w]`` and mask ``[h, w]`` (for figures)."""
        from diffst.prepare.binning import pool_grid, rasterise_spots

        if self.lr_layout == "grid":
            assert self.hr is not None
            f = self.geometry.factor
            return pool_grid(self.hr, f).astype(np.float32), pool_grid(self.tissue, f) > 0
        return rasterise_spots(
            self.spot_counts,
            self.spot_centres_um,
            self.spot_diameter_um,
            self.geometry,
            self.spot_pitch_um,
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
            "spot arrays (HR = spots, LR = pooled spots); whole-section prediction needs a model "
            "trained on binned transcripts (lr_mode grid or visium). Score spot-array models "
            "with `diffst benchmark`"
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
    sample: SpatialSample, genes: tuple[str, ...], hr_um: float, factor: int
) -> SectionInputs:
    """Real spot data (e.g. Visium): the measured spots give the LR map of every tile."""
    from diffst.prepare.binning import GridGeometry
    from diffst.prepare.tiling import tissue_mask_bins

    table = sample.spots
    assert table is not None
    counts = _spot_counts(table, genes).toarray()
    centres = np.asarray(table.centers_um, dtype=np.float64)
    pitch = float(table.pitch_um or table.diameter_um)
    margin = max(pitch, table.diameter_um) / 2
    lo, hi = centres.min(axis=0) - margin, centres.max(axis=0) + margin
    geometry = GridGeometry.covering((lo[0], lo[1], hi[0], hi[1]), hr_um, factor)
    tissue = _spot_tissue(centres, pitch, table.lattice, geometry)
    if sample.tissue_mask is not None:
        tissue &= tissue_mask_bins(sample, geometry)
    return SectionInputs(
        geometry, tissue, "spots", centres, counts, float(table.diameter_um), table.shape, pitch
    )


def _inputs_from_transcripts(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> SectionInputs:
    """HR platforms: the section rasters of ``diffst prepare`` (same grid, tissue, pseudo-spots)."""
    from diffst.prepare import api as prep
    from diffst.prepare.binning import scan_transcripts
    from diffst.prepare.config import PrepareConfig

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
    )
    scan = scan_transcripts(sample.transcripts)
    geometry = prep.section_geometry(sample, pcfg, scan)
    section = prep.build_section_inputs(sample, genes, geometry, pcfg, scan)
    if layout == "visium":
        assert section.spot_centres_um is not None and section.spot_counts is not None
        return SectionInputs(
            geometry,
            section.tissue,
            "visium",
            section.spot_centres_um,
            section.spot_counts.astype(np.float64),
            diameter,
            "circle",
            pitch,
            section.hr,
        )
    return _grid_inputs(geometry, section.tissue, section.hr)


def _grid_inputs(geometry: GridGeometry, tissue: np.ndarray, hr: np.ndarray) -> SectionInputs:
    """Grid-pooling layout: the in-tissue LR cells are the measured (square) spots."""
    from diffst.prepare.binning import pool_grid

    f = geometry.factor
    a, b = np.nonzero(pool_grid(tissue, f) > 0)
    x0, y0 = geometry.origin_um
    centres = np.column_stack([x0 + (b + 0.5) * geometry.lr_um, y0 + (a + 0.5) * geometry.lr_um])
    counts = pool_grid(hr, f)[:, a, b].T.astype(np.float64)
    lr_um = geometry.lr_um
    return SectionInputs(geometry, tissue, "grid", centres, counts, lr_um, "square", lr_um, hr)


def _inputs_from_dense_spots(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> SectionInputs:
    """Bin arrays no coarser than the HR bins (Visium HD): summed onto the HR grid like
    molecules, then pseudo-spots as in training (grid pooling or the Visium lattice)."""
    from scipy.spatial import cKDTree

    from diffst.prepare.binning import GridGeometry, visium_lattice
    from diffst.prepare.tiling import tissue_mask_bins

    table = sample.spots
    assert table is not None
    counts, centres = _spot_counts(table, genes), np.asarray(table.centers_um, dtype=np.float64)
    geo = meta["geometry"]
    r = table.diameter_um / 2
    lo, hi = centres.min(axis=0) - r, centres.max(axis=0) + r
    extent = sample.image.extent_um() if sample.image is not None else (*lo, *hi)
    geometry = GridGeometry.covering(extent, float(geo["hr_um"]), int(geo["factor"]))
    h, w = geometry.shape_hr
    ij = np.floor((centres - np.asarray(geometry.origin_um)) / geometry.hr_um).astype(np.int64)
    inside = np.flatnonzero((ij >= 0).all(axis=1) & (ij[:, 0] < w) & (ij[:, 1] < h))
    to_bin = sp.csr_matrix(
        (np.ones(inside.size), (ij[inside, 1] * w + ij[inside, 0], inside)), (h * w, len(centres))
    )
    hr = np.asarray((to_bin @ counts).T.todense()).reshape(len(genes), h, w)
    tissue = tissue_mask_bins(sample, geometry, density=hr.sum(axis=0))
    layout, diameter, pitch = _lr_layout(meta)
    if layout == "grid":
        return _grid_inputs(geometry, tissue, hr)
    spots = visium_lattice(geometry, None, pitch, diameter)
    sij = np.floor((spots - np.asarray(geometry.origin_um)) / geometry.hr_um).astype(np.int64)
    spots = spots[tissue[sij[:, 1], sij[:, 0]]] if len(spots) else spots
    dist, near = cKDTree(spots).query(centres, distance_upper_bound=diameter / 2 * (1 + 1e-12))
    ok = np.flatnonzero(np.isfinite(dist))
    to_spot = sp.csr_matrix((np.ones(ok.size), (near[ok], ok)), (len(spots), len(centres)))
    sums = np.asarray((to_spot @ counts).todense())
    return SectionInputs(geometry, tissue, "visium", spots, sums, diameter, "circle", pitch, hr)


def _spot_counts(table: Any, genes: tuple[str, ...]) -> sp.csr_matrix:
    """``[n, G]`` counts of ``genes`` (matched by id first, then by name), float64 CSR."""
    table.require_raw_counts()
    column = {g: k for k, g in enumerate(table.genes)}
    column.update({g: k for k, g in enumerate(table.gene_ids)})  # ids are unique, names may not be
    return sp.csr_matrix(table.counts[:, [column[g] for g in genes]], dtype=np.float64)


def build_section_inputs(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> SectionInputs:
    """Section grid, tissue bins, LR map and measured spots for a sample (no network work).

    Parameters
    ----------
    sample
        Section from any reader: transcripts (HR platforms) or spots (Visium and the like).
    genes
        Section gene names in checkpoint order (:func:`resolve_genes`).
    meta
        Checkpoint ``store_meta`` (geometry, normalisation, LR layout).
    """
    layout, _, _ = _lr_layout(meta)
    spots = sample.spots
    if sample.transcripts is None and spots is not None and spots.n_spots == 0:
        raise InputError(f"{spots.path or sample.name}: field spots is empty (no tissue)")
    if sample.transcripts is not None:
        inputs = _inputs_from_transcripts(sample, genes, meta)
    elif (
        spots is not None
        and float(spots.pitch_um or spots.diameter_um) <= meta["geometry"]["hr_um"]
    ):
        inputs = _inputs_from_dense_spots(sample, genes, meta)
    else:
        if layout != "visium":
            _log.warning(
                "the checkpoint was trained with %s LR pooling; real spots are rasterised to its "
                "LR grid, train with `--lr visium` for spot data",
                layout,
            )
        geo = meta["geometry"]
        inputs = _inputs_from_spots(sample, genes, float(geo["hr_um"]), int(geo["factor"]))
    if not inputs.tissue.any():
        raise InputError(f"sample {sample.name!r}: no tissue bin found; nothing to predict")
    return inputs


def spot_report(
    stats: np.ndarray, tissue: np.ndarray, inputs: SectionInputs, genes: list[str], project: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Consistency of ``stats [5, G, H, W]`` with the measured spots, and the projection onto them
    when ``project`` (bins restricted to ``tissue [H, W]``); returns the (projected) statistics
    and the report of :func:`spot_consistency` plus ``projected``."""
    geo = inputs.geometry
    spot_of_bin = assign_bins_to_spots(
        inputs.spot_centres_um,
        inputs.spot_diameter_um,
        inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um,
        geo.hr_um,
        geo.shape_hr,
        bin_mask=tissue,
    )
    n = len(inputs.spot_centres_um)
    member = spot_membership(spot_of_bin, n)
    bins_per_spot = np.bincount(spot_of_bin[spot_of_bin >= 0], minlength=n)
    agg = aggregate_to_spots(stats[Stat.MEAN], member)
    report = spot_consistency(agg, inputs.spot_counts, genes, bins_per_spot)
    report["projected"] = project
    if project:
        stats = project_to_spots(stats, spot_of_bin, inputs.spot_counts)
    return stats, report


def project_mean(mean: np.ndarray, tissue: np.ndarray, inputs: SectionInputs) -> np.ndarray:
    """A point estimate ``[G, H, W]`` rescaled so each measured spot (LR cell) re-aggregates to
    its measured counts (bins in ``tissue`` only; bins in no spot unchanged)."""
    geo = inputs.geometry
    spot_of_bin = assign_bins_to_spots(
        inputs.spot_centres_um, inputs.spot_diameter_um, inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um, geo.hr_um, geo.shape_hr, bin_mask=tissue,
    )  # fmt: skip
    stats = np.zeros((len(Stat), *mean.shape), dtype=np.float32)
    stats[Stat.MEAN] = np.nan_to_num(mean)
    return project_to_spots(stats, spot_of_bin, inputs.spot_counts)[Stat.MEAN]
