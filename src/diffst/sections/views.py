"""Image views of a patch: the tissue-level view and the cell-level tile grid.

Views are cut by µm extent through the image's own :class:`~diffst.geometry.AffineTransform`,
so any pixel size, offset or rotation between the expression frame and the image is honoured.
Downsampling is anti-aliased (strided read + block means over the output pixel's footprint),
sampling is bilinear.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from diffst.config import ConfigError
from diffst.io.sample import SpatialImage
from diffst.sections.binning import GridGeometry
from diffst.sections.config import ViewConfig
from diffst.sections.stain import StainStats, StainTransform

__all__ = [
    "channel_indices",
    "image_views",
    "intensity_range",
    "sample_image",
    "section_stain",
    "thumbnail",
    "tile_entropy",
    "to_uint8",
]

_THUMBNAIL_PX = 1024  # longest side of the thumbnail used for intensity percentiles


def channel_indices(image: SpatialImage, channels: tuple[str, ...]) -> np.ndarray:
    """Indices of the named channels (all channels when ``channels`` is empty)."""
    if not channels:
        return np.arange(len(image.channels))
    missing = [c for c in channels if c not in image.channels]
    if missing:
        raise ConfigError(
            f"views.channels: {missing} not in the image channels {list(image.channels)} "
            f"({image.path or 'image'})"
        )
    return np.array([image.channels.index(c) for c in channels])


def thumbnail(image: SpatialImage, channel_idx: np.ndarray) -> np.ndarray:
    """``[h, w, C]`` float32 strided thumbnail of the image's chosen channels, longest side at
    most ``_THUMBNAIL_PX`` (the section statistics of the views are taken on it)."""
    h, w = image.shape_hw
    step = max(1, math.ceil(max(h, w) / _THUMBNAIL_PX))
    return np.asarray(image.pixels[::step, ::step, :], dtype=np.float32)[..., channel_idx]


def intensity_range(
    image: SpatialImage, channel_idx: np.ndarray, percentiles: tuple[float, float]
) -> np.ndarray:
    """Per-channel ``[C, 2]`` (low, high) intensities from a strided thumbnail of the image."""
    thumb = thumbnail(image, channel_idx)
    flat = thumb.reshape(-1, thumb.shape[-1])
    lo = np.percentile(flat, percentiles[0], axis=0)
    hi = np.percentile(flat, percentiles[1], axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return np.stack([lo, hi], axis=1).astype(np.float64)


def to_uint8(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Map ``[C, ...]`` intensities linearly from ``ranges [C, 2]`` to 0..255 (clipped)."""
    shape = (-1,) + (1,) * (values.ndim - 1)
    lo = ranges[:, 0].reshape(shape)
    hi = ranges[:, 1].reshape(shape)
    scaled = (values - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def sample_image(
    image: SpatialImage,
    channel_idx: np.ndarray,
    rect_um: tuple[float, float, float, float],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """Resample the rectangle ``rect_um = (x0, y0, width, height)`` (µm) to ``out_hw`` pixels.

    Returns
    -------
    np.ndarray
        ``[C, out_h, out_w]`` float32 raw intensities; outside the image the value is 0.
    """
    x0, y0, width, height = rect_um
    oh, ow = out_hw
    scale = max(width / ow, height / oh) / image.um_per_px  # native px per output px
    step = max(1, int(scale // 4))  # strided read for large reductions ...
    k = max(1, int(scale / step))  # ... then k×k block means (area averaging)
    xs = x0 + (np.arange(ow) + 0.5) * (width / ow)
    ys = y0 + (np.arange(oh) + 0.5) * (height / oh)
    gx, gy = np.meshgrid(xs, ys)
    colrow = image.um_to_px.apply(np.column_stack([gx.ravel(), gy.ravel()]))
    col, row = colrow[:, 0] - 0.5, colrow[:, 1] - 0.5  # pixel-centre index coordinates
    margin = 2 * step * k
    h, w = image.shape_hw
    r0 = max(0, math.floor(row.min()) - margin)
    r1 = min(h, math.ceil(row.max()) + margin + 1)
    c0 = max(0, math.floor(col.min()) - margin)
    c1 = min(w, math.ceil(col.max()) + margin + 1)
    out = np.zeros((len(channel_idx), oh, ow), dtype=np.float32)
    if r1 <= r0 or c1 <= c0:
        return out
    crop = np.asarray(image.pixels[r0:r1:step, c0:c1:step, :])[..., channel_idx]
    k = max(1, min(k, crop.shape[0], crop.shape[1]))
    ch, cw = crop.shape[0] // k * k, crop.shape[1] // k * k
    reduced = _block_mean(crop[:ch, :cw], k)
    coords = np.stack(
        [((row - r0) / step - (k - 1) / 2) / k, ((col - c0) / step - (k - 1) / 2) / k]
    )
    on_image = (row >= -0.5) & (row < h - 0.5) & (col >= -0.5) & (col < w - 0.5)
    for c in range(len(reduced)):
        values = ndimage.map_coordinates(reduced[c], coords, order=1, mode="nearest")
        out[c] = np.where(on_image, values, 0.0).reshape(oh, ow)
    return out


def _block_mean(crop: np.ndarray, k: int) -> np.ndarray:
    """``[H, W, C]`` (H, W multiples of k) → ``[C, H/k, W/k]`` float32 means of k×k blocks."""
    planes = np.moveaxis(crop, -1, 0).astype(np.float32)
    c, h, w = planes.shape
    if k == 1:
        return planes
    rows = planes.reshape(c, h // k, k, w).sum(axis=2)
    return rows.reshape(c, h // k, w // k, k).sum(axis=3) / float(k * k)


def tile_entropy(cells: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each tile's 256-level grey histogram.

    Parameters
    ----------
    cells
        ``[N, C, t, t]`` uint8 tiles; grey = channel mean.

    Returns
    -------
    np.ndarray
        ``[N]`` float32 in ``[0, 8]``.
    """
    n = cells.shape[0]
    grey = np.rint(cells.reshape(n, cells.shape[1], -1).astype(np.float32).mean(axis=1))
    grey = grey.astype(np.int64) + 256 * np.arange(n)[:, None]
    hist = np.bincount(grey.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return ent.astype(np.float32)


def image_views(
    image: SpatialImage,
    origin_um: tuple[float, float],
    patch_bins: int,
    geometry: GridGeometry,
    view_cfg: ViewConfig,
    *,
    ranges: np.ndarray | None = None,
    stain: StainTransform | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue view, cell tiles and tile scores of the square patch at ``origin_um``.

    Parameters
    ----------
    image
        Histology / fluorescence image with its µm → px transform.
    origin_um
        ``(x0, y0)`` top-left corner of the patch, µm.
    patch_bins
        Patch side in HR bins (the patch covers ``patch_bins · hr_um`` µm).
    geometry
        HR grid (gives ``hr_um``).
    view_cfg
        Sizes and channels.
    ranges
        ``[C, 2]`` intensity range mapped to 0..255; computed from the image when omitted.
    stain
        The section's colour normalisation (:func:`section_stain`), applied to both views before
        the tile scores are computed; ``None``: none.

    Returns
    -------
    (np.ndarray, np.ndarray, np.ndarray)
        ``tissue [C, S, S]`` uint8, ``cells [n·n, C, t, t]`` uint8 (row-major tile grid),
        ``cell_score [n·n]`` float32 (entropy, bits).
    """
    idx = channel_indices(image, view_cfg.channels)
    if ranges is None:
        ranges = intensity_range(image, idx, view_cfg.intensity_percentiles)
    side = patch_bins * geometry.hr_um
    rect = (origin_um[0], origin_um[1], side, side)
    s, n, t = view_cfg.tissue_px, view_cfg.cell_grid, view_cfg.tile_px
    tissue = to_uint8(sample_image(image, idx, rect, (s, s)), ranges)
    mosaic = to_uint8(sample_image(image, idx, rect, (n * t, n * t)), ranges)
    if stain is not None:
        tissue, mosaic = stain(tissue), stain(mosaic)
    c = len(idx)
    cells = mosaic.reshape(c, n, t, n, t).transpose(1, 3, 0, 2, 4).reshape(n * n, c, t, t)
    return tissue, np.ascontiguousarray(cells), tile_entropy(cells)


def section_stain(
    image: SpatialImage,
    channel_idx: np.ndarray,
    ranges: np.ndarray,
    reference: StainStats | None = None,
) -> StainTransform:
    """The colour normalisation of one section's views: statistics of the section's thumbnail
    (after the views' intensity range) to ``reference`` (``None``: the section itself, i.e.
    the training image of a store).

    Raises :class:`ConfigError` for images that are not 3-channel brightfield (H&E).
    """
    from diffst.sections.stain import stain_stats

    if image.kind != "he" or len(channel_idx) != 3:
        raise ConfigError(
            f"{image.path or 'image'}: views.stain=reinhard normalises 3-channel H&E images; "
            f"this one is {image.kind} with {len(channel_idx)} channel(s) {list(image.channels)}"
        )
    thumb = thumbnail(image, channel_idx)
    rgb = np.moveaxis(to_uint8(np.moveaxis(thumb, -1, 0), ranges), 0, -1)
    source = stain_stats(rgb)
    return StainTransform(source, reference or source)
