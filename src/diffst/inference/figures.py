"""Per-gene PNG figures: image, measured LR, predicted mean and uncertainty side by side.

All panels share the section frame (µm): the image is resampled at the section grid, the LR map
covers ``factor × factor`` HR bins per cell. Figures are written atomically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffst.inference.to_anndata import GridLike, hires_image

if TYPE_CHECKING:
    from diffst.io.sample import SpatialImage

__all__ = ["gene_figure", "image_on_grid", "write_gene_figures"]


def image_on_grid(
    image: SpatialImage, geometry: GridLike, supersample: int = 4, max_px: int = 1000
) -> np.ndarray:
    """Image resampled (nearest pixel) on the section grid.

    Parameters
    ----------
    image
        Section image with its µm → px transform.
    geometry
        Section grid; ``supersample`` image samples per HR bin side (capped at ``max_px`` per side).

    Returns
    -------
    np.ndarray
        ``[H·s, W·s, 3]`` float32 RGB in [0, 1]; points outside the image are white.
    """
    h, w = geometry.shape_hr
    s = max(1, min(supersample, max_px // max(h, w, 1)))
    rgb, scalef = hires_image(image, max_px=4 * max_px)
    rows, cols = np.mgrid[0 : h * s, 0 : w * s]
    step = geometry.hr_um / s
    x0, y0 = geometry.origin_um
    xy = np.stack([x0 + (cols.ravel() + 0.5) * step, y0 + (rows.ravel() + 0.5) * step], axis=1)
    px = image.um_to_px.apply(xy) * scalef
    c = np.floor(px[:, 0]).astype(np.int64)
    r = np.floor(px[:, 1]).astype(np.int64)
    inside = (r >= 0) & (r < rgb.shape[0]) & (c >= 0) & (c < rgb.shape[1])
    out = np.ones((rows.size, 3), dtype=np.float32)
    out[inside] = rgb[r[inside], c[inside]]
    return out.reshape(h * s, w * s, 3)


def _safe_name(gene: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", gene) or "gene"


def gene_figure(
    path: str | os.PathLike[str],
    gene: str,
    image_rgb: np.ndarray | None,
    lr: np.ndarray | None,
    mean: np.ndarray,
    std: np.ndarray,
    geometry: GridLike,
    factor: int,
) -> Path:
    """Write one gene's 4-panel figure.

    Parameters
    ----------
    path
        Output PNG.
    gene
        Gene name (title).
    image_rgb
        ``[h, w, 3]`` image on the section grid (:func:`image_on_grid`) or ``None``.
    lr
        ``[h_lr, w_lr]`` measured LR counts per cell, or ``None``.
    mean, std
        ``[H, W]`` predicted mean and standard deviation, counts per HR bin (NaN outside tissue).
    geometry, factor
        Section grid and HR bins per LR cell side (panel extents in µm).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    x0, y0 = geometry.origin_um
    h, w = geometry.shape_hr
    hr_extent = (x0, x0 + w * geometry.hr_um, y0 + h * geometry.hr_um, y0)
    fig = Figure(figsize=(16, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    panels = [("image", image_rgb), ("measured LR", lr), ("predicted mean", mean), ("std", std)]
    for ax, (title, data) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("x (µm)")
        if data is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            continue
        extent = hr_extent
        if title == "measured LR":
            hl, wl = data.shape
            side = factor * geometry.hr_um
            extent = (x0, x0 + wl * side, y0 + hl * side, y0)
        im = ax.imshow(
            data, extent=extent, interpolation="nearest", cmap=None if data.ndim == 3 else "viridis"
        )
        ax.set_xlim(hr_extent[0], hr_extent[1])
        ax.set_ylim(hr_extent[2], hr_extent[3])
        if data.ndim == 2:
            fig.colorbar(
                im, ax=ax, fraction=0.046, label="counts / cell" if lr is data else "counts / bin"
            )
    axes[0].set_ylabel("y (µm)")
    fig.suptitle(gene)
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.12, top=0.88, wspace=0.4)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_gene_figures(
    out_dir: str | os.PathLike[str],
    genes: Sequence[str],
    selected: Sequence[str],
    stats_mean: np.ndarray,
    stats_std: np.ndarray,
    lr: np.ndarray | None,
    image_rgb: np.ndarray | None,
    geometry: GridLike,
    factor: int,
) -> list[Path]:
    """One PNG per gene of ``selected`` (``<out_dir>/<gene>.png``).

    ``stats_mean``/``stats_std`` are ``[G, H, W]``; ``lr`` is ``[G, h, w]`` or ``None``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = {g: k for k, g in enumerate(genes)}
    paths = []
    for gene in selected:
        k = index[gene]
        paths.append(
            gene_figure(
                out / f"{_safe_name(gene)}.png",
                gene,
                image_rgb,
                None if lr is None else lr[k],
                stats_mean[k],
                stats_std[k],
                geometry,
                factor,
            )
        )
    return paths
