"""Patches of a spot grid: HR/LR counts, masks and the histology views cut by µm extent.

The views are cut in the *grid frame* of the section: ``x_g = pitch · x_lattice`` and
``y_g = pitch · y_lattice / row_spacing``, so that every grid cell is a ``pitch × pitch`` square
(hex rows are ``pitch·√3/2`` apart on the slide and are stretched to ``pitch``). The grid frame is
mapped to image pixels through the fitted lattice → µm affine and the image's own µm → px
transform, so the crop of a patch is exactly the slide region of its spot rows. On hex lattices
alternate rows are half a pitch apart horizontally; the crop is centred between them (a quarter
pitch right of the even-row spots), see ``docs/spot_lattices.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffst.config import ConfigError
from diffst.sections.config import SplitConfig, SpotHRConfig, ViewConfig
from diffst.sections.spot_grid import SpotGrid, grid_frame, grid_image, pool_spots
from diffst.sections.stain import StainTransform
from diffst.sections.tiling import PatchGrid, block_splits, patch_splits
from diffst.sections.views import channel_indices, image_views, intensity_range, section_stain

__all__ = [
    "SpotPatches",
    "SpotPlan",
    "patch_starts",
    "plan_spot_patches",
    "spot_patches",
]


@dataclass
class SpotPatches:
    """Patches of one section, in store layout (``N`` patches, ``P`` spots, ``p = P / k``).

    Attributes
    ----------
    hr, lr
        ``[N, G, P, P]`` int32 and ``[N, G, p, p]`` float32 raw counts (LR: measured-spot sums).
    mask, lr_mask
        ``[N, P, P]`` and ``[N, p, p]`` uint8: measured spots / LR cells with a measured spot.
    lr_spots
        ``[N, p, p]`` uint8: measured spots summed into each LR cell.
    tissue, cells, cell_score
        Views as in ``docs/architecture.md`` §3.
    origin_um
        ``[N, 2]`` float64 top-left corner of each patch in the section's grid frame
        (:func:`grid_frame`: ``(c·pitch, r·pitch)``), µm; its matrix maps it to the sample frame.
    grid_rc
        ``[N, 2]`` int64 top-left grid cell ``(r, c)`` of each patch.
    split
        ``[N]`` int64: 0 train, 1 val, 2 test.
    intensity_range
        ``[C, 2]`` image intensities mapped to 0..255 in the views.
    tally
        Candidate windows, dropped for too few measured spots, dropped for straddling splits.
    """

    hr: np.ndarray
    lr: np.ndarray
    mask: np.ndarray
    lr_mask: np.ndarray
    lr_spots: np.ndarray
    tissue: np.ndarray
    cells: np.ndarray
    cell_score: np.ndarray
    origin_um: np.ndarray
    grid_rc: np.ndarray
    split: np.ndarray
    intensity_range: np.ndarray
    tally: dict[str, int]


def patch_starts(n: int, patch: int, stride: int) -> np.ndarray:
    """Patch origins ``0, stride, …`` covering ``n`` cells (the grid is padded to fit)."""
    last = max(0, -(-(n - patch) // stride))
    return np.arange(last + 1, dtype=np.int64) * stride


def _padded(grid: SpotGrid, cfg: SpotHRConfig) -> tuple[np.ndarray, np.ndarray, PatchGrid]:
    h, w = grid.measured.shape
    rows, cols = patch_starts(h, cfg.patch, cfg.stride), patch_starts(w, cfg.patch, cfg.stride)
    hp, wp = int(rows[-1]) + cfg.patch, int(cols[-1]) + cfg.patch
    hr = np.zeros((grid.hr.shape[0], hp, wp), dtype=np.int32)
    hr[:, :h, :w] = grid.hr
    measured = np.zeros((hp, wp), dtype=bool)
    measured[:h, :w] = grid.measured
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    frac = np.array(
        [measured[r : r + cfg.patch, c : c + cfg.patch].mean() for r, c in zip(rr, cc, strict=True)]
    )
    return hr, measured, PatchGrid(rr, cc, frac)


def _splits(
    cands: PatchGrid, shape: tuple[int, int], cfg: SpotHRConfig, split: SplitConfig | int
) -> np.ndarray:
    if isinstance(split, int):
        return np.full(len(cands.rows), split, dtype=np.int64)
    blocks_cfg = SplitConfig(
        block_um=float(cfg.split_block), fractions=split.fractions, seed=split.seed
    )
    blocks, side = block_splits(shape, 1.0, blocks_cfg)
    return patch_splits(cands, cfg.patch, blocks, side)


@dataclass
class SpotPlan:
    """Kept patches of a section before cutting (also what ``--dry-run`` prints).

    Attributes
    ----------
    hr, measured
        ``[G, H', W']`` counts and ``[H', W']`` measured mask padded so every patch fits.
    rows, cols, split
        ``[M]`` top-left grid cell and split index (0 train, 1 val, 2 test) of kept patches.
    tally
        Candidate windows, dropped for too few measured spots, dropped for straddling splits.
    """

    hr: np.ndarray
    measured: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    split: np.ndarray
    tally: dict[str, int]


def plan_spot_patches(grid: SpotGrid, cfg: SpotHRConfig, split: SplitConfig | int) -> SpotPlan:
    """Choose the patches of a section: enough measured spots and not straddling splits.

    ``split`` is the spatial block split of the section, or one split index for every patch
    (a held-out section is all test). Raises :class:`ConfigError` when no patch is kept.
    """
    hr, measured, cands = _padded(grid, cfg)
    enough = (cands.tissue_fraction >= cfg.min_measured_fraction) & (cands.tissue_fraction > 0)
    labels = _splits(cands, measured.shape, cfg, split)
    keep = enough & (labels >= 0)
    if not keep.any():
        raise ConfigError(
            f"no patch of {cfg.patch}×{cfg.patch} spots has ≥ {cfg.min_measured_fraction:.0%} "
            f"measured spots (grid {grid.measured.shape}); lower spots.patch or "
            "spots.min_measured_fraction"
        )
    tally = {
        "candidates": len(cands.rows),
        "low_tissue": int((~enough).sum()),
        "straddling": int((enough & (labels < 0)).sum()),
    }
    return SpotPlan(hr, measured, cands.rows[keep], cands.cols[keep], labels[keep], tally)


def spot_stain(
    grid: SpotGrid, views: ViewConfig, reference: StainTransform | None = None
) -> StainTransform | None:
    """The section's colour normalisation (``views.stain``) to ``reference``'s reference
    statistics (``None``: the section is its own reference); ``None`` without normalisation."""
    if views.stain == "none":
        return None
    assert grid.image is not None
    idx = channel_indices(grid.image, views.channels)
    ranges = intensity_range(grid.image, idx, views.intensity_percentiles)
    return section_stain(grid.image, idx, ranges, reference.reference if reference else None)


def spot_patches(
    grid: SpotGrid,
    cfg: SpotHRConfig,
    views: ViewConfig,
    split: SplitConfig | int,
    *,
    stain: StainTransform | None = None,
) -> SpotPatches:
    """Cut a section's spot grid into patches with pooled LR maps and histology views.

    Parameters
    ----------
    grid
        The section (:func:`~diffst.sections.spot_grid.spot_grid`); must carry an image.
    cfg
        Patch side, stride, factor and the measured-share threshold.
    views
        Tissue-view and cell-tile sizes.
    split
        As for :func:`plan_spot_patches`.
    stain
        The section's colour normalisation (:func:`spot_stain`), or ``None``.

    Returns
    -------
    :class:`SpotPatches` of the kept patches.
    """
    plan = plan_spot_patches(grid, cfg, split)
    geometry, to_um = grid_frame(grid, cfg.factor, plan.measured.shape)
    image = grid_image(grid, to_um)
    idx = channel_indices(image, views.channels)
    ranges = intensity_range(image, idx, views.intensity_percentiles)
    p, k = cfg.patch, cfg.factor
    out: dict[str, list[np.ndarray]] = {}
    for r, c in zip(plan.rows, plan.cols, strict=True):
        sub_hr, sub_m = plan.hr[:, r : r + p, c : c + p], plan.measured[r : r + p, c : c + p]
        pooled = pool_spots(sub_hr, sub_m, k)
        origin = geometry.sub_grid(int(r), int(c), p).origin_um
        tissue, cells, score = image_views(
            image, origin, p, geometry, views, ranges=ranges, stain=stain
        )
        arrays = {
            "hr": sub_hr,
            "lr": pooled.lr.astype(np.float32),
            "mask": sub_m.astype(np.uint8),
            "lr_mask": pooled.lr_mask.astype(np.uint8),
            "lr_spots": pooled.n_spots.astype(np.uint8),
            "tissue": tissue,
            "cells": cells,
            "cell_score": score,
            "origin_um": np.asarray(origin, dtype=np.float64),
        }
        for name, value in arrays.items():
            out.setdefault(name, []).append(value)
    return SpotPatches(
        **{n: np.stack(v) for n, v in out.items()},
        grid_rc=np.stack([plan.rows, plan.cols], axis=1),
        split=plan.split,
        intensity_range=ranges,
        tally=plan.tally,
    )
