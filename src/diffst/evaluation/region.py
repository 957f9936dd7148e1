"""The held-out region on the section's own LR grid: what every method is scored on.

A store's evaluation split is a set of patches (:class:`PatchSet`) placed on the section's LR grid
(origins on multiples of the LR factor, ``docs/store_format.md``), so every patch's LR input is a
block of the section's one LR tiling. :func:`region_from_patches` stitches them into one
:class:`Region`: the measured HR map of the region's bounding box, the bins scored (in tissue,
inside a complete LR cell of a patch, each counted once) and the LR map of that box. Every
method's prediction is a map of the same box (:func:`stitch_patches` for patch-wise predictions,
:meth:`Region.cut` for whole-section maps), so all methods are scored on exactly the same bins
from exactly the same LR grid.

Baselines may read LR cells around the box (an :class:`LRContext` of the whole section), as any
method may at prediction time; LR windows at other offsets are never used for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from diffst.io.sample import InputError
from diffst.metrics import lr_cell_index, pool_sum

__all__ = [
    "LRContext",
    "PatchSet",
    "Region",
    "patch_validity",
    "region_from_patches",
    "stitch_patches",
]


@dataclass(frozen=True)
class PatchSet:
    """Measured truth on ``N`` square patches of one section.

    Attributes
    ----------
    hr
        ``[N, G, P, P]`` measured counts per HR unit (bin or spot).
    lr
        ``[N, G, p, p]`` LR counts per LR cell (sum over its measured HR units).
    mask, lr_mask
        ``[N, P, P]`` / ``[N, p, p]`` bool: units inside tissue (measured spots) / LR cells holding
        a measurement.
    origin_bins
        ``[N, 2]`` int ``(row, col)`` of each patch's top-left bin in the section grid.
    genes
        ``G`` gene names.
    factor
        HR bins per LR cell side.
    lr_units
        ``[N, p, p]`` HR units measured in each LR cell (measured spots of a pooled spot block;
        ``None``: every bin of the cell inside the patch, ``factor²`` for a full cell).
    """

    hr: np.ndarray
    lr: np.ndarray
    mask: np.ndarray
    lr_mask: np.ndarray
    origin_bins: np.ndarray
    genes: tuple[str, ...]
    factor: int
    lr_units: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, g, p, _ = self.hr.shape
        if self.lr.shape[:2] != (n, g) or self.mask.shape != (n, p, p):
            raise ValueError(
                f"patch arrays disagree: hr {self.hr.shape}, lr {self.lr.shape}, "
                f"mask {self.mask.shape}"
            )
        if len(self.genes) != g:
            raise ValueError(f"{len(self.genes)} gene names for {g} genes")

    @property
    def patch(self) -> int:
        """Patch side ``P`` in HR bins."""
        return int(self.hr.shape[-1])

    def units(self) -> np.ndarray:
        """``[N, p, p]`` measured HR units per LR cell (see ``lr_units``)."""
        if self.lr_units is not None:
            return np.asarray(self.lr_units, dtype=np.float64)
        ones = np.ones((len(self.hr), 1, self.patch, self.patch))
        return np.stack([pool_sum(x, self.factor)[0] for x in ones])


@dataclass(frozen=True)
class LRContext:
    """LR cells of the section around (and including) a region, for interpolation baselines.

    ``lr [G, h, w]`` counts, ``mask [h, w]`` measured cells, ``units [h, w]`` measured HR units
    per cell, ``origin_cells`` the (row, col) of cell ``[0, 0]`` in the section's LR grid.
    """

    lr: np.ndarray
    mask: np.ndarray
    units: np.ndarray
    origin_cells: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Region:
    """Measured truth of a held-out region on the section's own HR grid and LR tiling.

    Attributes
    ----------
    hr
        ``[G, H, W]`` float32 measured counts of the region's bounding box (0 where unknown).
    scored
        ``[H, W]`` bool: the bins every metric is computed on (in tissue, held out, inside a
        complete LR cell of the section's grid; each bin once).
    lr, lr_mask, lr_units
        ``[G, h, w]``, ``[h, w]``, ``[h, w]``: the box's LR cells (``h = ceil(H / factor)``),
        whether each holds a measurement and how many HR units were measured in it.
    origin_bins
        ``(row, col)`` of the box's top-left bin in the section grid (multiples of ``factor``).
    genes, factor
        Gene names; HR bins per LR cell side.
    patch
        Side of the non-overlapping tiles of the per-patch (paper-protocol) metrics, HR bins.
    n_patches
        Evaluation patches the region was stitched from.
    context
        LR cells of the wider section for the interpolation baselines (``None``: the box's own).
    """

    hr: np.ndarray
    scored: np.ndarray
    lr: np.ndarray
    lr_mask: np.ndarray
    lr_units: np.ndarray
    origin_bins: tuple[int, int]
    genes: tuple[str, ...]
    factor: int
    patch: int
    n_patches: int = 0
    context: LRContext | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the box."""
        return int(self.hr.shape[1]), int(self.hr.shape[2])

    def cells(self) -> np.ndarray:
        """``[H, W]`` index of the LR cell of each bin (row-major over ``h × w``)."""
        return lr_cell_index(self.shape, self.factor)

    def n_lr_cells(self) -> int:
        """LR cells holding at least one scored bin (each counted once)."""
        return int(np.unique(self.cells()[self.scored]).size)

    def cut(self, section_map: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The box out of a section-grid map ``[..., H_s, W_s]`` (zero outside the map).

        ``offset`` maps this region's section grid onto the map's grid (map index = section
        index + offset), for maps on a grid anchored elsewhere.
        """
        r = self.origin_bins[0] + int(offset[0])
        c = self.origin_bins[1] + int(offset[1])
        h, w = self.shape
        out = np.zeros((*section_map.shape[:-2], h, w), dtype=np.float32)
        hs, ws = section_map.shape[-2:]
        r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + h, hs), min(c + w, ws)
        if r1 > r0 and c1 > c0:
            out[..., r0 - r : r1 - r, c0 - c : c1 - c] = section_map[..., r0:r1, c0:c1]
        return out

    def lr_projection(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(scale, shift)`` ``[G, H, W]`` that give every measured LR cell its measured
        total: ``mean·scale + shift`` sums, over the cell's scored bins, to the cell's LR count.

        The projection ``diffst predict`` applies to its point prediction
        (:func:`diffst.inference.spots.spot_projection`), with the region's measured LR cells as the
        spots and their scored bins as the spots' bins; unmeasured cells and unscored bins keep
        their values (scale 1, shift 0).
        """
        from diffst.inference.spots import spot_projection

        cells = self.cells()
        measured = self.lr_mask.ravel()[cells] & self.scored
        spot_of_bin = np.where(measured, cells, -1)
        return spot_projection(mean, spot_of_bin, self.lr.reshape(self.lr.shape[0], -1).T)

    def baseline_input(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """``(lr, mask, units, (row, col) of the box's first cell in them)`` for baselines."""
        if self.context is None:
            return self.lr, self.lr_mask, self.lr_units, (0, 0)
        ctx = self.context
        f = self.factor
        at = (
            self.origin_bins[0] // f - ctx.origin_cells[0],
            self.origin_bins[1] // f - ctx.origin_cells[1],
        )
        return ctx.lr, ctx.mask, ctx.units, at

    def with_context(self, context: LRContext) -> Region:
        """This region with LR cells of the wider section for the baselines."""
        return replace(self, context=context)

    def tiles(self) -> list[tuple[int, int]]:
        """Top-left bins (box coordinates) of non-overlapping ``patch``-sided tiles of the box
        that hold scored bins (the units of the per-patch metrics)."""
        h, w = self.shape
        p = self.patch
        return [
            (r, c)
            for r in range(0, h, p)
            for c in range(0, w, p)
            if self.scored[r : r + p, c : c + p].any()
        ]


def patch_validity(patch: int, factor: int) -> np.ndarray:
    """``[P, P]`` bool: bins of a patch that lie in one of its *complete* LR cells.

    When ``P`` is not a multiple of the factor, the patch's last LR row and column are partial
    (they sum fewer bins than a cell of the section's LR grid); their bins are not scored from
    that patch.
    """
    full = (patch // factor) * factor
    valid = np.zeros((patch, patch), dtype=bool)
    valid[:full, :full] = True
    return valid


def _check_on_grid(truth: PatchSet, what: str) -> None:
    off = truth.origin_bins % truth.factor
    if np.any(off):
        bad = int(np.count_nonzero(off.any(axis=1)))
        raise InputError(
            f"{what}: {bad} of {len(off)} patches start between LR cells (origins not multiples "
            f"of the factor {truth.factor}), so their LR inputs come from other LR grids than the "
            "section's; such patches cannot be scored on one LR grid. Re-run `diffst prepare`, "
            "which places the validation and test patches on the section's LR grid"
        )
    if truth.patch < truth.factor:
        raise InputError(f"{what}: patches of {truth.patch} bins hold no complete LR cell")


def region_from_patches(
    truth: PatchSet, *, context: LRContext | None = None, what: str = "evaluation patches"
) -> Region:
    """Stitch evaluation patches into the :class:`Region` they cover.

    Raises :class:`~diffst.io.sample.InputError` when a patch is not on the section's LR grid.
    """
    _check_on_grid(truth, what)
    n, g, p, _ = truth.hr.shape
    f = truth.factor
    origin = truth.origin_bins.min(axis=0)
    extent = truth.origin_bins.max(axis=0) + p - origin
    h, w = int(extent[0]), int(extent[1])
    hr = np.zeros((g, h, w), dtype=np.float32)
    scored = np.zeros((h, w), dtype=bool)
    hl, wl = -(-h // f), -(-w // f)
    lr = np.zeros((g, hl, wl), dtype=np.float32)
    lr_mask = np.zeros((hl, wl), dtype=bool)
    lr_units = np.zeros((hl, wl), dtype=np.float64)
    valid = patch_validity(p, f)
    full = p // f
    units = truth.units()
    for i in range(n):
        r, c = (truth.origin_bins[i] - origin).astype(int)
        hr[:, r : r + p, c : c + p] = truth.hr[i]
        scored[r : r + p, c : c + p] |= truth.mask[i].astype(bool) & valid
        a, b = r // f, c // f
        lr[:, a : a + full, b : b + full] = truth.lr[i][:, :full, :full]
        lr_mask[a : a + full, b : b + full] = truth.lr_mask[i][:full, :full].astype(bool)
        lr_units[a : a + full, b : b + full] = units[i][:full, :full]
    return Region(
        hr, scored, lr, lr_mask, lr_units, (int(origin[0]), int(origin[1])), truth.genes, f, p,
        n, context,
    )  # fmt: skip


def stitch_patches(
    patches: np.ndarray, truth: PatchSet, region: Region, how: str = "blend"
) -> np.ndarray:
    """Patch-wise values ``[N, ..., P, P]`` (on ``truth``'s patches) → one map ``[..., H, W]``.

    ``"blend"``: weighted mean of the overlapping patches, with the cosine window of
    :func:`diffst.inference.tiled.blend_window` restricted to complete LR cells — for point
    predictions. ``"central"``: each bin takes the value of the one patch in which it is most
    central — for std, quantiles and samples, so a stitched interval is a real interval of one
    patch's samples (an average of quantiles is no quantile). Bins no patch covers are 0.
    """
    from diffst.inference.tiled import blend_window

    n, p = patches.shape[0], patches.shape[-1]
    if n != len(truth.origin_bins):
        raise ValueError(f"{n} predicted patches for {len(truth.origin_bins)} truth patches")
    window = blend_window(p) * patch_validity(p, truth.factor)
    origin = np.asarray(region.origin_bins)
    h, w = region.shape
    out = np.zeros((*patches.shape[1:-2], h, w), dtype=np.float64)
    weight = np.zeros((h, w))
    for i in range(n):
        r, c = (truth.origin_bins[i] - origin).astype(int)
        if how == "blend":
            out[..., r : r + p, c : c + p] += patches[i] * window
            weight[r : r + p, c : c + p] += window
        elif how == "central":
            better = window > weight[r : r + p, c : c + p]
            view = out[..., r : r + p, c : c + p]
            view[..., better] = np.asarray(patches[i])[..., better]
            weight[r : r + p, c : c + p] = np.maximum(weight[r : r + p, c : c + p], window)
        else:
            raise ValueError(f"unknown stitching {how!r}: blend or central")
    if how == "blend":
        np.divide(out, weight, out=out, where=weight > 0)
    return out.astype(np.float32)
