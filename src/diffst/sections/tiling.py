"""Tissue mask on the HR grid, patch tiling with stride, and the spatial block split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from diffst.geometry import GeometryError
from diffst.io.sample import InputError, SpatialSample
from diffst.sections.binning import GridGeometry
from diffst.sections.config import SplitConfig, TissueConfig

__all__ = [
    "SPLITS",
    "PatchGrid",
    "block_edges",
    "block_splits",
    "mask_from_density",
    "mask_from_image",
    "patch_grid",
    "patch_splits",
    "split_blocks",
    "tissue_mask_bins",
]

SPLITS = ("train", "val", "test")


def tissue_mask_bins(
    sample: SpatialSample,
    geometry: GridGeometry,
    cfg: TissueConfig | None = None,
    *,
    density: np.ndarray | None = None,
) -> np.ndarray:
    """In-tissue HR bins of ``geometry``.

    Parameters
    ----------
    sample
        Section; its ``tissue_mask`` or ``image`` may be used.
    geometry
        HR grid.
    cfg
        Which source to use (``auto``: the sample's mask, else transcript density, else image).
    density
        ``[H, W]`` molecules per HR bin (all non-control genes), needed for density-based masks.

    Returns
    -------
    np.ndarray
        ``[H, W]`` bool. Raises :class:`InputError` when no bin is in tissue.
    """
    cfg = cfg or TissueConfig()
    source = cfg.source
    if source == "auto":
        if sample.tissue_mask is not None:
            source = "mask"
        elif density is not None:
            source = "transcripts"
        else:
            source = "image"
    if source == "mask":
        if sample.tissue_mask is None:
            raise InputError(
                f"sample {sample.name!r}: tissue.source=mask but no tissue mask was read"
            )
        mask = _resample_mask(sample, geometry)
    elif source == "transcripts":
        mask = mask_from_density(_need_density(density, sample), cfg)
    elif source == "image":
        mask = mask_from_image(sample, geometry, cfg)
    else:
        mask = mask_from_image(sample, geometry, cfg) | mask_from_density(
            _need_density(density, sample), cfg
        )
    if not mask.any():
        raise InputError(f"sample {sample.name!r}: no tissue found (tissue.source={source})")
    return mask


def _need_density(density: np.ndarray | None, sample: SpatialSample) -> np.ndarray:
    if density is None:
        raise InputError(f"sample {sample.name!r}: a density-based tissue mask needs binned counts")
    return density


def _resample_mask(sample: SpatialSample, geometry: GridGeometry) -> np.ndarray:
    """Nearest-neighbour lookup of the sample's tissue mask at every HR bin centre."""
    assert sample.tissue_mask is not None
    xs, ys = geometry.bin_centres_um()
    gx, gy = np.meshgrid(xs, ys)
    colrow = sample.tissue_mask.um_to_px.apply(np.column_stack([gx.ravel(), gy.ravel()]))
    col = np.floor(colrow[:, 0]).astype(np.int64)
    row = np.floor(colrow[:, 1]).astype(np.int64)
    mh, mw = sample.tissue_mask.mask.shape
    inside = (col >= 0) & (col < mw) & (row >= 0) & (row < mh)
    out = np.zeros(col.shape, dtype=bool)
    out[inside] = sample.tissue_mask.mask[row[inside], col[inside]]
    return out.reshape(geometry.shape_hr)


def mask_from_density(density: np.ndarray, cfg: TissueConfig) -> np.ndarray:
    """Bins whose smoothed molecule density exceeds ``density_fraction × p99``, holes filled."""
    smooth = ndimage.gaussian_filter(density.astype(np.float32), cfg.smooth_bins)
    ref = float(np.percentile(smooth, 99))
    if ref <= 0:
        return np.zeros(density.shape, dtype=bool)
    return ndimage.binary_fill_holes(smooth > cfg.density_fraction * ref)


def mask_from_image(sample: SpatialSample, geometry: GridGeometry, cfg: TissueConfig) -> np.ndarray:
    """Otsu threshold of the smoothed grey image at HR-bin resolution, holes filled.

    Brightfield (``kind="he"``): tissue is darker than the background; fluorescence: brighter.
    """
    from diffst.sections.views import sample_image

    if sample.image is None:
        raise InputError(f"sample {sample.name!r}: an image-based tissue mask needs an image")
    x0, y0, x1, y1 = geometry.extent_um()
    idx = np.arange(len(sample.image.channels))
    grey = sample_image(sample.image, idx, (x0, y0, x1 - x0, y1 - y0), geometry.shape_hr).mean(0)
    inside = _inside_image(sample, geometry)
    if not inside.any():
        return np.zeros(grey.shape, dtype=bool)
    grey[~inside] = grey[inside].mean()  # off-image bins must not look like tissue
    grey = ndimage.gaussian_filter(grey, cfg.smooth_bins)
    values = grey[inside]
    if float(values.max()) - float(values.min()) <= 1e-6 * max(1.0, abs(float(values.max()))):
        return np.zeros(grey.shape, dtype=bool)
    thr = threshold_otsu(values)
    fg = (grey < thr if sample.image.kind == "he" else grey > thr) & inside
    return ndimage.binary_fill_holes(fg)


def _inside_image(sample: SpatialSample, geometry: GridGeometry) -> np.ndarray:
    """``[H, W]`` bool: HR bin centres that fall on the image."""
    assert sample.image is not None
    xs, ys = geometry.bin_centres_um()
    gx, gy = np.meshgrid(xs, ys)
    colrow = sample.image.um_to_px.apply(np.column_stack([gx.ravel(), gy.ravel()]))
    h, w = sample.image.shape_hw
    ok = (colrow[:, 0] >= 0) & (colrow[:, 0] < w) & (colrow[:, 1] >= 0) & (colrow[:, 1] < h)
    return ok.reshape(geometry.shape_hr)


@dataclass(frozen=True)
class PatchGrid:
    """Candidate patches: top-left HR bins, in-tissue share and the block holding each."""

    rows: np.ndarray  # [M] int64 top-left HR row of each patch
    cols: np.ndarray  # [M] int64 top-left HR column
    tissue_fraction: np.ndarray  # [M] float64 share of in-tissue bins
    block_row: np.ndarray | None = None  # [M] int64 row of the split block holding the patch
    block_col: np.ndarray | None = None  # [M] int64 column of that block


def block_edges(n: int, side: int, unit: int = 1) -> np.ndarray:
    """``[nb + 1]`` edges (HR bins) of ``nb = max(1, n // side)`` near-equal blocks over ``n``.

    Inner edges are rounded to multiples of ``unit`` (the LR factor), so every LR cell of the
    section's own LR grid lies in exactly one block; the last edge is ``n``.
    """
    nb = max(1, n // side)
    edges = np.round(np.linspace(0, n, nb + 1) / unit) * unit
    edges = np.clip(edges, 0, n).astype(np.int64)
    edges[-1] = n
    return np.unique(edges)


def patch_grid(
    tissue: np.ndarray,
    patch: int,
    stride: int,
    row_edges: np.ndarray,
    col_edges: np.ndarray,
    *,
    aligned: np.ndarray | None = None,
    factor: int = 1,
) -> PatchGrid:
    """``patch × patch`` windows tiled inside every split block with ``stride``.

    Within a block the last window is shifted to end at the block border, so blocks are covered
    and no window crosses a block (hence never two splits). Blocks flagged in ``aligned``
    (``[bh, bw]`` bool; the evaluation splits) are tiled on the section's own LR grid instead:
    origins are multiples of ``factor``, the stride is ``max(factor, stride // factor · factor)``
    and the last window starts at the last multiple of ``factor`` that keeps it inside the block,
    so every such window's LR input is a block of the section's one LR grid. Raises
    :class:`GeometryError` when the patch is larger than the region.
    """
    h, w = tissue.shape
    if patch > h or patch > w:
        raise GeometryError(
            f"patch of {patch} HR bins is larger than the region ({h}×{w} bins); "
            "lower --patch or --hr-um"
        )
    bh, bw = len(row_edges) - 1, len(col_edges) - 1
    flags = np.zeros((bh, bw), bool) if aligned is None else np.asarray(aligned, bool)
    on_grid = max(factor, (stride // factor) * factor)
    parts: list[tuple[np.ndarray, ...]] = []
    for i in range(bh):
        for j in range(bw):
            unit, step = (factor, on_grid) if flags[i, j] else (1, stride)
            rows = _starts(int(row_edges[i]), int(row_edges[i + 1]), patch, step, unit)
            cols = _starts(int(col_edges[j]), int(col_edges[j + 1]), patch, step, unit)
            if rows.size and cols.size:
                rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
                parts.append((rr, cc, np.full(rr.size, i), np.full(rr.size, j)))
    empty = np.zeros(0, dtype=np.int64)
    rr, cc, br, bc = (
        (np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(4))
        if parts
        else (empty, empty, empty, empty)
    )
    order = np.lexsort((cc, rr))  # row-major over the section, as a plain tiling would be
    rr, cc, br, bc = rr[order], cc[order], br[order], bc[order]
    integral = np.pad(tissue.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inside = (
        integral[rr + patch, cc + patch]
        - integral[rr, cc + patch]
        - integral[rr + patch, cc]
        + integral[rr, cc]
    )
    return PatchGrid(rr, cc, inside / float(patch * patch), br, bc)


def _starts(a: int, b: int, patch: int, stride: int, unit: int) -> np.ndarray:
    """Window starts in ``[a, b − patch]``: ``a, a + stride, …`` plus the last one that ends at
    ``b`` (``unit = 1``), or on multiples of ``unit`` only (the LR grid)."""
    first = -(-a // unit) * unit
    last = ((b - patch) // unit) * unit
    if last < first:
        return np.zeros(0, dtype=np.int64)
    local = list(range(first, last + 1, stride))
    if local[-1] != last:
        local.append(last)
    return np.asarray(local, dtype=np.int64)


def _assign_blocks(n: int, cfg: SplitConfig) -> np.ndarray:
    """``[n]`` int8 split per block from a seeded permutation; every split with a positive
    fraction gets at least one block when ``n`` allows."""
    wanted = [k for k, f in enumerate(cfg.fractions) if f > 0]
    counts = np.floor(np.asarray(cfg.fractions) * n).astype(int)
    for k in wanted:
        counts[k] = max(counts[k], 1)
    while counts.sum() > n and counts.max() > 1:
        counts[int(np.argmax(counts))] -= 1
    counts[wanted[0]] += n - counts.sum()
    labels = np.repeat(np.arange(3, dtype=np.int8), np.maximum(counts, 0))[:n]
    order = np.random.default_rng(cfg.seed).permutation(n)
    out = np.empty(n, dtype=np.int8)
    out[order] = labels
    return out


def split_blocks(
    shape_hr: tuple[int, int], hr_um: float, cfg: SplitConfig, unit: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-equal blocks of about ``cfg.block_um`` assigned to splits, their inner edges on
    multiples of ``unit`` HR bins (the LR factor: each LR cell in one block).

    Returns
    -------
    (np.ndarray, np.ndarray, np.ndarray)
        ``[bh, bw]`` int8 split per block (0 train, 1 val, 2 test), row edges ``[bh + 1]`` and
        column edges ``[bw + 1]`` in HR bins.
    """
    side = max(1, round(cfg.block_um / hr_um))
    row_edges = block_edges(shape_hr[0], side, unit)
    col_edges = block_edges(shape_hr[1], side, unit)
    if cfg.layout == "rows":
        col_edges = np.array([0, shape_hr[1]])
    elif cfg.layout == "columns":
        row_edges = np.array([0, shape_hr[0]])
    bh, bw = len(row_edges) - 1, len(col_edges) - 1
    return _assign_blocks(bh * bw, cfg).reshape(bh, bw), row_edges, col_edges


def block_splits(
    shape_hr: tuple[int, int], hr_um: float, cfg: SplitConfig
) -> tuple[np.ndarray, int]:
    """Square blocks of exactly ``cfg.block_um`` from the grid origin (last ones partial)
    assigned to splits; use with :func:`patch_splits`.

    Returns
    -------
    (np.ndarray, int)
        ``[bh, bw]`` int8 split per block and the block side in HR bins.
    """
    side = max(1, round(cfg.block_um / hr_um))
    bh, bw = -(-shape_hr[0] // side), -(-shape_hr[1] // side)
    return _assign_blocks(bh * bw, cfg).reshape(bh, bw), side


def patch_splits(grid: PatchGrid, patch: int, blocks: np.ndarray, side: int) -> np.ndarray:
    """Split of each patch under :func:`block_splits`, −1 when it straddles splits."""
    out = np.empty(len(grid.rows), dtype=np.int64)
    for k, (r, c) in enumerate(zip(grid.rows, grid.cols, strict=True)):
        region = blocks[
            r // side : (r + patch - 1) // side + 1, c // side : (c + patch - 1) // side + 1
        ]
        out[k] = region.flat[0] if np.all(region == region.flat[0]) else -1
    return out
