"""``alignment.png``: the image with transcript density (or Visium spots) and patches overlaid,
so registration errors are visible before any training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffst.sections.views import channel_indices, intensity_range, sample_image

if TYPE_CHECKING:
    from diffst.io.sample import SpatialSample
    from diffst.preparation.plan import PatchPlan
    from diffst.sections.inputs import SectionInputs

__all__ = ["alignment_figure"]

_MAX_PX = 800  # longest side of the background thumbnail
_SPLIT_COLOURS = ("tab:green", "tab:orange", "tab:red")


def alignment_figure(
    sample: SpatialSample, section: SectionInputs, plan: PatchPlan, path: Path
) -> None:
    """Write the alignment check (PNG, matplotlib Agg) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Rectangle

    geo = section.geometry
    x0, y0, x1, y1 = geo.extent_um()
    extent = (x0, x1, y1, y0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), constrained_layout=True)
    grey = _thumbnail(sample, section)
    assert section.hr is not None
    density = np.log1p(section.hr.sum(axis=0).astype(np.float64))
    for ax in axes:
        ax.imshow(grey, cmap="gray", extent=extent, interpolation="nearest")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    shown = np.ma.masked_where(density <= 0, density)
    axes[0].imshow(shown, cmap="magma", alpha=0.5, extent=extent, interpolation="nearest")
    axes[0].set_title("image + log1p transcript density (panel genes), LR spots (cyan)")
    if section.spot_centres_um is not None and len(section.spot_centres_um):
        d = section.spot_diameter_um  # circles drawn at their true size in µm
        spots = EllipseCollection(
            d,
            d,
            0.0,
            units="xy",
            offsets=section.spot_centres_um,
            offset_transform=axes[0].transData,
            facecolors="none",
            edgecolors="cyan",
            linewidths=0.6,
        )
        axes[0].add_collection(spots)
    axes[1].contour(
        section.geometry.bin_centres_um()[0],
        section.geometry.bin_centres_um()[1],
        section.tissue.astype(float),
        levels=[0.5],
        colors="yellow",
        linewidths=0.8,
    )
    side = plan.patch * geo.hr_um
    for r, c, k in zip(plan.rows, plan.cols, plan.split, strict=True):
        px, py = x0 + c * geo.hr_um, y0 + r * geo.hr_um
        axes[1].add_patch(
            Rectangle((px, py), side, side, fill=False, lw=0.6, ec=_SPLIT_COLOURS[int(k)])
        )
    axes[1].set_title("tissue (yellow) and patches: train green, val orange, test red")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _thumbnail(sample: SpatialSample, section: SectionInputs) -> np.ndarray:
    assert sample.image is not None
    geo = section.geometry
    x0, y0, x1, y1 = geo.extent_um()
    scale = _MAX_PX / max(x1 - x0, y1 - y0)
    hw = (max(1, int((y1 - y0) * scale)), max(1, int((x1 - x0) * scale)))
    idx = channel_indices(sample.image, ())
    ranges = intensity_range(sample.image, idx, (0.5, 99.5))
    img = sample_image(sample.image, idx, (x0, y0, x1 - x0, y1 - y0), hw)
    norm = (img - ranges[:, 0, None, None]) / (ranges[:, 1] - ranges[:, 0])[:, None, None]
    return np.clip(norm.mean(axis=0), 0, 1)
