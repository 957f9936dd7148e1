"""Transcripts and spots → the HR grid and the LR pseudo-spot layer, streaming.

The HR grid (:class:`GridGeometry`) is a square grid of ``hr_um`` bins anchored at ``origin_um``;
HR bin ``(i, j)`` covers ``x ∈ [x0 + j·hr_um, x0 + (j+1)·hr_um)``,
``y ∈ [y0 + i·hr_um, y0 + (i+1)·hr_um)``. LR cell ``(a, b)`` covers the HR bins
``[a·factor, (a+1)·factor) × [b·factor, (b+1)·factor)``; the last row/column may be partial.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from diffst.geometry import GeometryError
from diffst.io.sample import InputError, TranscriptChunk, TranscriptSource

__all__ = [
    "BinningStats",
    "GridGeometry",
    "SourceScan",
    "SparseCounts",
    "bin_transcripts",
    "bin_transcripts_sparse",
    "bin_transcripts_with_stats",
    "gene_index_map",
    "gene_totals_in_bins",
    "pool_counts",
    "pool_grid",
    "pool_window",
    "rasterise_spots",
    "scan_transcripts",
    "spot_sums_from_transcripts",
    "visium_lattice",
]

#: a chunk whose bounding box holds at most this many (bins × genes) per molecule is
#: accumulated with a dense local histogram instead of scattered adds
_LOCAL_BOX_PER_MOLECULE = 8


@dataclass(frozen=True)
class GridGeometry:
    """The whole-section HR grid.

    Attributes
    ----------
    origin_um
        ``(x0, y0)`` of the top-left corner of HR bin ``(0, 0)``, µm.
    hr_um
        HR bin side, µm.
    factor
        HR bins per LR cell side.
    shape_hr
        ``(H, W)`` number of HR bins of the whole section grid.
    """

    origin_um: tuple[float, float]
    hr_um: float
    factor: int
    shape_hr: tuple[int, int]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hr_um) and self.hr_um > 0):
            raise GeometryError(f"hr_um must be a positive number of µm, got {self.hr_um}")
        if self.factor < 1:
            raise GeometryError(f"factor must be ≥ 1, got {self.factor}")
        if min(self.shape_hr) < 1:
            raise GeometryError(f"grid shape must be positive, got {self.shape_hr}")

    @property
    def shape_lr(self) -> tuple[int, int]:
        """``(h, w)`` LR cells covering the grid (ceil division)."""
        h, w = self.shape_hr
        return -(-h // self.factor), -(-w // self.factor)

    @property
    def lr_um(self) -> float:
        """LR cell side, µm."""
        return self.hr_um * self.factor

    def extent_um(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` covered by the grid, µm."""
        x0, y0 = self.origin_um
        h, w = self.shape_hr
        return x0, y0, x0 + w * self.hr_um, y0 + h * self.hr_um

    def bin_centres_um(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the HR bins: ``x [W]`` and ``y [H]``, µm."""
        x0, y0 = self.origin_um
        h, w = self.shape_hr
        return x0 + (np.arange(w) + 0.5) * self.hr_um, y0 + (np.arange(h) + 0.5) * self.hr_um

    def sub_grid(self, row: int, col: int, size: int) -> GridGeometry:
        """Geometry of the ``size × size`` patch whose top-left HR bin is ``(row, col)``."""
        x0, y0 = self.origin_um
        origin = (x0 + col * self.hr_um, y0 + row * self.hr_um)
        return GridGeometry(origin, self.hr_um, self.factor, (size, size))

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (manifest ``geometry``)."""
        return {
            "origin_um": [float(v) for v in self.origin_um],
            "hr_um": float(self.hr_um),
            "factor": int(self.factor),
            "shape_hr": [int(v) for v in self.shape_hr],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridGeometry:
        """Inverse of :meth:`to_dict`; extra keys are ignored."""
        ox, oy = data["origin_um"]
        h, w = data["shape_hr"]
        origin = (float(ox), float(oy))
        return cls(origin, float(data["hr_um"]), int(data["factor"]), (int(h), int(w)))

    @classmethod
    def covering(
        cls, extent_um: tuple[float, float, float, float], hr_um: float, factor: int
    ) -> GridGeometry:
        """Smallest grid anchored at the extent's top-left corner that covers ``extent_um``."""
        x0, y0, x1, y1 = extent_um
        if not (x1 > x0 and y1 > y0):
            raise GeometryError(f"empty extent {extent_um} (µm)")
        w = max(1, math.ceil((x1 - x0) / hr_um - 1e-9))
        h = max(1, math.ceil((y1 - y0) / hr_um - 1e-9))
        return cls((float(x0), float(y0)), float(hr_um), int(factor), (h, w))


@dataclass
class BinningStats:
    """What happened to the molecules while binning (for the summary)."""

    total: int = 0  # molecules read from the source
    not_in_panel: int = 0  # molecules of genes outside the panel (includes controls)
    outside_grid: int = 0  # panel molecules outside the grid
    kept: int = 0  # molecules added to the HR map


@dataclass
class SourceScan:
    """One pass over a transcript source: per-gene totals and the bounding box."""

    totals: np.ndarray  # [n_genes] int64 molecules per gene
    extent_um: tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max), µm
    n: int  # molecules
    control: np.ndarray  # [n_genes] bool control probes
    spatial: np.ndarray | None = None  # [n_genes] Moran's I (gene_selection="spatial")


def scan_transcripts(source: TranscriptSource) -> SourceScan:
    """Stream ``source`` once: molecule count per gene and the coordinate extent (µm)."""
    totals = np.zeros(len(source.genes), dtype=np.int64)
    lo = np.array([np.inf, np.inf])
    hi = np.array([-np.inf, -np.inf])
    n = 0
    for chunk in source.iter_chunks():
        if len(chunk) == 0:
            continue
        _check_chunk(chunk, source)
        totals += np.bincount(chunk.gene, minlength=len(totals))[: len(totals)]
        lo = np.minimum(lo, [chunk.x_um.min(), chunk.y_um.min()])
        hi = np.maximum(hi, [chunk.x_um.max(), chunk.y_um.max()])
        n += len(chunk)
    if n == 0:
        raise InputError(f"{source.path or 'transcripts'}: no transcripts to bin")
    extent = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return SourceScan(totals, extent, n, np.asarray(source.control, dtype=bool))


def gene_totals_in_bins(
    source: TranscriptSource, geometry: GridGeometry, bins: np.ndarray
) -> np.ndarray:
    """Molecules per gene of ``source`` that fall in the HR bins marked in ``bins``.

    Parameters
    ----------
    source
        Transcript source (x, y in µm).
    geometry
        The HR grid.
    bins
        ``[H, W]`` bool, e.g. the bins of the training blocks.

    Returns
    -------
    np.ndarray
        ``[n_genes]`` int64, in the order of ``source.genes``.
    """
    totals = np.zeros(len(source.genes), dtype=np.int64)
    for _, _, gene in _molecules_in_bins(source, geometry, bins):
        totals += np.bincount(gene, minlength=len(totals))[: len(totals)]
    return totals


def _molecules_in_bins(
    source: TranscriptSource, geometry: GridGeometry, bins: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per chunk, the HR bin ``(row, col)`` and gene of the molecules in the marked bins."""
    keep = np.asarray(bins, dtype=bool)
    h, w = geometry.shape_hr
    if keep.shape != (h, w):
        raise ValueError(f"bin mask {keep.shape} does not match the grid {(h, w)}")
    inv = 1.0 / geometry.hr_um
    for chunk in source.iter_chunks():
        if len(chunk) == 0:
            continue
        _check_chunk(chunk, source)
        u = np.floor((np.asarray(chunk.x_um) - geometry.origin_um[0]) * inv).astype(np.int64)
        v = np.floor((np.asarray(chunk.y_um) - geometry.origin_um[1]) * inv).astype(np.int64)
        ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        ok[ok] = keep[v[ok], u[ok]]
        yield v[ok], u[ok], chunk.gene[ok]


def gene_counts_per_cell(
    source: TranscriptSource, geometry: GridGeometry, bins: np.ndarray
) -> sp.csr_matrix:
    """Molecules per LR cell and gene, counting only molecules in the HR bins marked in
    ``bins``: a sparse ``[h·w, n_genes]`` matrix (row ``a·w + b`` is LR cell ``(a, b)``), so
    panels of thousands of genes never need a dense ``[G, H, W]`` map."""
    lh, lw = geometry.shape_lr
    f, g = geometry.factor, len(source.genes)
    out = sp.csr_matrix((lh * lw, g), dtype=np.int64)
    for row, col, gene in _molecules_in_bins(source, geometry, bins):
        cell = (row // f) * lw + col // f
        out = out + sp.csr_matrix((np.ones(cell.size, np.int64), (cell, gene)), shape=out.shape)
    return out


def _check_chunk(chunk: TranscriptChunk, source: TranscriptSource) -> None:
    g = chunk.gene
    if g.size and (g.min() < 0 or g.max() >= len(source.genes)):
        raise InputError(
            f"{source.path or 'transcripts'}: field gene has indices outside "
            f"0..{len(source.genes) - 1}"
        )


def _pieces(source: TranscriptSource, max_chunk: int) -> Iterator[TranscriptChunk]:
    """The source's chunks, each checked and cut into pieces of at most ``max_chunk`` molecules
    (bounding the temporaries of binning whatever the reader's chunk size)."""
    for chunk in source.iter_chunks():
        _check_chunk(chunk, source)
        for start in range(0, len(chunk), max_chunk):
            yield TranscriptChunk(
                chunk.x_um[start : start + max_chunk],
                chunk.y_um[start : start + max_chunk],
                chunk.gene[start : start + max_chunk],
            )


def gene_index_map(source_genes: tuple[str, ...], panel: tuple[str, ...]) -> np.ndarray:
    """``[len(source_genes)]`` int64: panel index of each source gene, −1 when not in the panel."""
    where = {name: k for k, name in enumerate(source_genes)}
    missing = [g for g in panel if g not in where]
    if missing:
        raise InputError(f"transcripts: field gene lacks the requested genes {missing}")
    out = np.full(len(source_genes), -1, dtype=np.int64)
    for k, name in enumerate(panel):
        out[where[name]] = k
    return out


def bin_transcripts(
    source: TranscriptSource, genes: tuple[str, ...], geometry: GridGeometry
) -> np.ndarray:
    """Count molecules of ``genes`` per HR bin, streaming over the source's chunks.

    Parameters
    ----------
    source
        Transcript source (x, y in µm).
    genes
        Panel, in output order; every name must be in ``source.genes``.
    geometry
        The HR grid; molecules outside it are dropped.

    Returns
    -------
    np.ndarray
        ``[G, H, W]`` int32 counts.
    """
    return bin_transcripts_with_stats(source, genes, geometry)[0]


def bin_transcripts_with_stats(
    source: TranscriptSource,
    genes: tuple[str, ...],
    geometry: GridGeometry,
    *,
    density: bool = False,
    max_chunk: int = 2_000_000,
    pool: int = 1,
) -> tuple[np.ndarray, BinningStats, np.ndarray | None]:
    """:func:`bin_transcripts` plus a :class:`BinningStats` of kept and dropped molecules and,
    with ``density=True``, ``[H, W]`` int32 molecules of *all* non-control genes per bin (a
    tissue signal that does not depend on the panel). Chunks longer than ``max_chunk`` are
    processed in pieces, bounding the temporary memory whatever the reader's chunk size.

    ``pool = k > 1`` returns the counts summed over ``k × k`` blocks of HR bins,
    ``[G, ceil(H / k), ceil(W / k)]`` — exactly :func:`pool_grid` of the HR counts (each molecule
    is placed in its HR bin first, then in that bin's block), without ever holding the HR map:
    ``G·H·W / k²`` integers instead of ``G·H·W``. The density stays on the HR grid."""
    if pool < 1:
        raise ValueError(f"pool must be ≥ 1, got {pool}")
    gmap = gene_index_map(source.genes, genes)
    h, w = geometry.shape_hr
    out = np.zeros((len(genes), -(-h // pool), -(-w // pool)), dtype=np.int32)
    stats = BinningStats()
    dens = np.zeros((1, h, w), dtype=np.int32) if density else None
    dmap = np.where(np.asarray(source.control, dtype=bool), -1, 0).astype(np.int64)
    for piece in _pieces(source, max_chunk):
        accumulate_chunk(out, piece, gmap, geometry, stats, pool)
        if dens is not None:
            accumulate_chunk(dens, piece, dmap, geometry, BinningStats())
    return out, stats, None if dens is None else dens[0]


def accumulate_chunk(
    out: np.ndarray,
    chunk: TranscriptChunk,
    gmap: np.ndarray,
    geometry: GridGeometry,
    stats: BinningStats,
    pool: int = 1,
) -> None:
    """Add one chunk's molecules to ``out [G, H, W]`` in place, updating ``stats``; with
    ``pool = k`` to ``out [G, ceil(H / k), ceil(W / k)]``, the HR bin ``(i, j)`` of each molecule
    counted in block ``(i // k, j // k)``."""
    found = _panel_bins(chunk, gmap, geometry, stats)
    if found is None:
        return
    g, i, j = found
    if pool > 1:
        i, j = i // pool, j // pool
    _add_counts(out, g, i, j)


def _panel_bins(
    chunk: TranscriptChunk, gmap: np.ndarray, geometry: GridGeometry, stats: BinningStats
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(panel gene, HR row, HR column)`` of the chunk's panel molecules on the grid, counting
    kept and dropped molecules in ``stats``; ``None`` when none is kept."""
    g_all = gmap[chunk.gene]
    in_panel = g_all >= 0
    stats.total += len(chunk)
    stats.not_in_panel += int(len(chunk) - np.count_nonzero(in_panel))
    inv = 1.0 / geometry.hr_um
    u = (np.asarray(chunk.x_um)[in_panel] - geometry.origin_um[0]) * inv
    v = (np.asarray(chunk.y_um)[in_panel] - geometry.origin_um[1]) * inv
    h, w = geometry.shape_hr
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    g = g_all[in_panel]
    n_ok = int(np.count_nonzero(ok))
    stats.outside_grid += int(len(ok) - n_ok)
    stats.kept += n_ok
    if n_ok == 0:
        return None
    if n_ok < len(ok):
        u, v, g = u[ok], v[ok], g[ok]
    return g, v.astype(np.int64), u.astype(np.int64)


def _add_counts(out: np.ndarray, g: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
    """``out[g, i, j] += 1`` for every molecule (repeats accumulate)."""
    n_genes = out.shape[0]
    i0, i1, j0, j1 = int(i.min()), int(i.max()) + 1, int(j.min()), int(j.max()) + 1
    box = (i1 - i0) * (j1 - j0) * n_genes
    if box <= _LOCAL_BOX_PER_MOLECULE * len(g):
        # spatially local chunk (files ordered by field of view): dense local histogram
        flat = (g * (i1 - i0) + (i - i0)) * (j1 - j0) + (j - j0)
        local = np.bincount(flat, minlength=box).reshape(n_genes, i1 - i0, j1 - j0)
        out[:, i0:i1, j0:j1] += local.astype(np.int32, copy=False)
    else:
        # scattered chunk: sort once, add run lengths (faster than np.add.at)
        h, w = out.shape[1:]
        flat = np.sort((g * h + i) * w + j)
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        runs = np.diff(np.append(starts, len(flat)))
        out.reshape(-1)[flat[starts]] += runs.astype(np.int32)


@dataclass
class SparseCounts:
    """HR counts of ``G`` genes on an ``H × W`` grid, held as a CSR matrix ``[H·W, G]`` of the
    non-zero (bin, gene) counts (bins row-major): memory follows the molecules, not genes × bins.

    Reads like the dense ``[G, H, W]`` int32 map where sections use it: ``shape``, windows
    ``counts[:, r0:r1, c0:c1]`` (dense int32, clipped at the grid like numpy slices),
    ``sum(axis=0)``, :meth:`bins`, :meth:`pooled` and :meth:`toarray`.
    """

    matrix: sp.csr_matrix  # [H·W, G] int32
    grid: tuple[int, int]  # (H, W)

    dtype = np.dtype(np.int32)
    ndim = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.matrix.shape[1]), *self.grid)

    @property
    def nbytes(self) -> int:
        m = self.matrix
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 3 and key[0] == slice(None)):
            raise TypeError("SparseCounts supports windows [:, rows, cols] only")
        h, w = self.grid
        r0, r1, _ = key[1].indices(h)
        c0, c1, _ = key[2].indices(w)
        rows, cols = max(r1 - r0, 0), max(c1 - c0, 0)
        if rows == 0 or cols == 0:
            return np.zeros((self.shape[0], rows, cols), dtype=np.int32)
        index = (np.arange(r0, r1)[:, None] * w + np.arange(c0, c1)[None, :]).ravel()
        return self.bins(index).reshape(-1, rows, cols)

    def bins(self, index: np.ndarray) -> np.ndarray:
        """``[G, n]`` int32 counts of the bins with row-major indices ``index [n]``."""
        return np.ascontiguousarray(self.matrix[np.asarray(index)].toarray().T, dtype=np.int32)

    def sum(self, axis: int = 0) -> np.ndarray:
        """Molecules per bin ``[H, W]`` (int64; ``axis`` must be 0, the genes)."""
        if axis != 0:
            raise ValueError("SparseCounts.sum: only over the genes (axis 0)")
        return np.asarray(self.matrix.sum(axis=1, dtype=np.int64)).reshape(self.grid)

    def pooled(self, factor: int) -> np.ndarray:
        """:func:`pool_grid` of the map: ``[G, ceil(H / f), ceil(W / f)]`` int64."""
        h, w = self.grid
        hl, wl = -(-h // factor), -(-w // factor)
        coo = self.matrix.tocoo()
        i, j = np.divmod(coo.row.astype(np.int64), w)
        cell = (i // factor) * wl + j // factor
        n = self.shape[0] * hl * wl
        sums = np.bincount(coo.col.astype(np.int64) * (hl * wl) + cell, weights=coo.data,
                           minlength=n)  # fmt: skip
        return np.rint(sums).astype(np.int64).reshape(-1, hl, wl)

    def toarray(self) -> np.ndarray:
        """The dense ``[G, H, W]`` int32 map."""
        return np.ascontiguousarray(self.matrix.T.toarray().reshape(self.shape), dtype=np.int32)


def bin_transcripts_sparse(
    source: TranscriptSource,
    genes: tuple[str, ...],
    geometry: GridGeometry,
    *,
    density: bool = False,
    max_chunk: int = 2_000_000,
) -> tuple[SparseCounts, BinningStats, np.ndarray | None]:
    """:func:`bin_transcripts_with_stats` into a :class:`SparseCounts`: the same counts, kept
    as (bin, gene) pairs; the density (all non-control genes per bin) stays a dense ``[H, W]``."""
    gmap = gene_index_map(source.genes, genes)
    h, w = geometry.shape_hr
    n_genes = len(genes)
    stats = BinningStats()
    dens = np.zeros((1, h, w), dtype=np.int32) if density else None
    dmap = np.where(np.asarray(source.control, dtype=bool), -1, 0).astype(np.int64)
    codes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for piece in _pieces(source, max_chunk):
        found = _panel_bins(piece, gmap, geometry, stats)
        if found is not None:
            g, i, j = found
            code = (i * w + j) * n_genes + g
            unique, runs = np.unique(code, return_counts=True)
            codes.append(unique)
            counts.append(runs)
        if dens is not None:
            accumulate_chunk(dens, piece, dmap, geometry, BinningStats())
    code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    data = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    matrix = sp.csr_matrix(
        (data.astype(np.int32), (code // max(n_genes, 1), code % max(n_genes, 1))),
        shape=(h * w, n_genes),
    )
    matrix.sum_duplicates()
    return SparseCounts(matrix, (h, w)), stats, None if dens is None else dens[0]


def pool_counts(hr: np.ndarray | SparseCounts, factor: int) -> np.ndarray:
    """:func:`pool_grid` of a dense or a :class:`SparseCounts` HR map."""
    return hr.pooled(factor) if isinstance(hr, SparseCounts) else pool_grid(hr, factor)


def pool_grid(hr: np.ndarray, factor: int) -> np.ndarray:
    """Exact sums over ``factor × factor`` blocks of the last two axes.

    Parameters
    ----------
    hr
        ``[..., H, W]`` counts.
    factor
        Block side in HR bins.

    Returns
    -------
    np.ndarray
        ``[..., ceil(H/f), ceil(W/f)]``; partial last blocks sum what exists. Integer inputs
        are summed in int64 and returned as int64; floats keep their dtype.
    """
    if factor < 1:
        raise GeometryError(f"factor must be ≥ 1, got {factor}")
    acc = np.int64 if np.issubdtype(hr.dtype, np.integer) or hr.dtype == bool else hr.dtype
    rows = _block_sum(np.asarray(hr), factor, -2, acc)
    return _block_sum(rows, factor, -1, acc)


def _block_sum(a: np.ndarray, factor: int, axis: int, acc: Any) -> np.ndarray:
    """Sums of consecutive ``factor`` slices along ``axis`` (−2 or −1); the last may be partial."""
    n = a.shape[axis]
    full = n // factor * factor
    if axis == -2:
        body, rest = a[..., :full, :], a[..., full:, :]
        blocks = body.reshape(*a.shape[:-2], full // factor, factor, a.shape[-1])
    else:
        body, rest = a[..., :full], a[..., full:]
        blocks = body.reshape(*a.shape[:-1], full // factor, factor)
    out = blocks.sum(axis=axis, dtype=acc)
    if full < n:
        out = np.concatenate([out, rest.sum(axis=axis, dtype=acc, keepdims=True)], axis=axis)
    return out


def visium_lattice(
    geometry: GridGeometry,
    tissue_extent: tuple[float, float, float, float] | None = None,
    pitch_um: float = 100.0,
    diameter_um: float = 55.0,
) -> np.ndarray:
    """Centres of a Visium-like triangular lattice inside an extent.

    Rows are ``pitch·√3/2`` apart, odd rows shifted by ``pitch/2`` (the Visium layout). A spot
    is kept when its whole circle lies inside ``tissue_extent`` (default: the grid extent).

    Returns
    -------
    np.ndarray
        ``[n, 2]`` spot centres ``(x, y)``, µm.
    """
    if not (pitch_um > 0 and 0 < diameter_um <= pitch_um):
        raise GeometryError(f"need 0 < diameter ≤ pitch, got {diameter_um}, {pitch_um} µm")
    x0, y0, x1, y1 = tissue_extent if tissue_extent is not None else geometry.extent_um()
    r = diameter_um / 2
    dy = pitch_um * math.sqrt(3) / 2
    rows = np.arange(y0 + r, y1 - r + 1e-9, dy)
    centres = []
    for k, y in enumerate(rows):
        xs = np.arange(x0 + r + (pitch_um / 2 if k % 2 else 0.0), x1 - r + 1e-9, pitch_um)
        centres.append(np.column_stack([xs, np.full_like(xs, y)]))
    if not centres:
        return np.zeros((0, 2))
    return np.concatenate(centres, axis=0)


def spot_sums_from_transcripts(
    source: TranscriptSource,
    genes: tuple[str, ...],
    centres_um: np.ndarray,
    diameter_um: float,
) -> np.ndarray:
    """Sum the molecules of ``genes`` inside each circular spot, streaming.

    Parameters
    ----------
    centres_um
        ``[n, 2]`` spot centres ``(x, y)``, µm. Spots must not overlap.
    diameter_um
        Spot diameter, µm; a molecule at distance ≤ d/2 from a centre belongs to that spot.

    Returns
    -------
    np.ndarray
        ``[n, G]`` int64 spot sums.
    """
    gmap = gene_index_map(source.genes, genes)
    out = np.zeros((len(centres_um), len(genes)), dtype=np.int64)
    if len(centres_um) == 0:
        return out
    tree = cKDTree(np.asarray(centres_um, dtype=np.float64))
    r = diameter_um / 2
    for chunk in source.iter_chunks():
        g = gmap[chunk.gene]
        keep = g >= 0
        xy = np.column_stack([np.asarray(chunk.x_um)[keep], np.asarray(chunk.y_um)[keep]])
        if len(xy) == 0:
            continue
        dist, idx = tree.query(xy, k=1, distance_upper_bound=r * (1 + 1e-12))
        inside = np.isfinite(dist) & (dist <= r)
        np.add.at(out, (idx[inside], g[keep][inside]), 1)
    return out


def pool_window(
    hr: np.ndarray | SparseCounts, tissue: np.ndarray, factor: int, row: int, col: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Grid-pooled LR of the HR window at ``(row, col)`` with side ``size`` bins.

    Returns raw LR counts ``[G, p, p]`` float32 and the LR mask ``[p, p]`` (cells holding any
    in-tissue bin), ``p = ceil(size / factor)``; a window cut short by the section border is
    zero-padded (masked) to ``p × p``. Sums are exact, so HR and LR totals agree per window.
    """
    p = -(-size // factor)
    lr = np.zeros((hr.shape[0], p, p), dtype=np.float32)
    mask = np.zeros((p, p), dtype=bool)
    pooled = pool_grid(hr[:, row : row + size, col : col + size], factor)
    pooled_mask = pool_grid(tissue[row : row + size, col : col + size], factor) > 0
    lr[:, : pooled.shape[1], : pooled.shape[2]] = pooled
    mask[: pooled.shape[1], : pooled.shape[2]] = pooled_mask
    return lr, mask


def rasterise_spots(
    spot_counts: np.ndarray,
    centres_um: np.ndarray,
    diameter_um: float,
    geometry: GridGeometry,
    pitch_um: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Spot sums → the LR grid of ``geometry``.

    Each LR cell takes the (raw) sum of the spot nearest to its centre, i.e. the spot whose
    Voronoi cell holds it; cells farther than one pitch from every spot are masked out.

    Parameters
    ----------
    spot_counts
        ``[n, G]`` spot sums.
    centres_um
        ``[n, 2]`` spot centres ``(x, y)``, µm.
    diameter_um
        Spot diameter, µm (recorded for the LR scale; the assignment uses the Voronoi cell).
    geometry
        Grid whose LR cells are filled.
    pitch_um
        Lattice pitch, µm; estimated as the median nearest-neighbour distance when omitted.

    Returns
    -------
    (np.ndarray, np.ndarray)
        ``lr [G, h, w]`` float32 and ``lr_mask [h, w]`` bool.
    """
    counts = np.asarray(spot_counts)
    h, w = geometry.shape_lr
    lr = np.zeros((counts.shape[1], h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=bool)
    if len(centres_um) == 0:
        return lr, mask
    tree = cKDTree(np.asarray(centres_um, dtype=np.float64))
    if pitch_um is None:
        pitch_um = _median_pitch(tree, centres_um, diameter_um)
    x0, y0 = geometry.origin_um
    cx = x0 + (np.arange(w) + 0.5) * geometry.lr_um
    cy = y0 + (np.arange(h) + 0.5) * geometry.lr_um
    gx, gy = np.meshgrid(cx, cy)
    dist, idx = tree.query(np.column_stack([gx.ravel(), gy.ravel()]), k=1)
    near = (dist <= pitch_um).reshape(h, w)
    idx = idx.reshape(h, w)
    mask[near] = True
    lr[:, near] = counts[idx[near]].T
    return lr, mask


def _median_pitch(tree: cKDTree, centres_um: np.ndarray, diameter_um: float) -> float:
    if len(centres_um) < 2:
        return float(diameter_um)
    dist, _ = tree.query(centres_um, k=2)
    return float(np.median(dist[:, 1]))
