"""Simulated tissue for tests and benchmarks — **synthetic data, not measurements**.

:func:`simulate_tissue` lays out ``K`` cell types as Voronoi-like regions of Voronoi cells.
Each type has its own image colour/texture (H&E-like RGB or DAPI/polyT fluorescence) and its
own expression programme (gene means); per cell, counts are Poisson and each molecule is
placed inside its cell. Every sample says it is synthetic: ``name`` starts with
``synthetic``, ``platform == "synthetic"`` and ``metadata["synthetic"] is True``.

:func:`random_transcripts` streams uniformly placed molecules for scale benchmarks. Writers of
platform-format files (Xenium, Visium, Visium HD, legacy ST) live in
:mod:`diffst.io.writers` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from diffst.geometry import AffineTransform
from diffst.io._constants import Platform
from diffst.io.sample import (
    ChunkedTranscripts,
    InMemoryTranscripts,
    SpatialImage,
    SpatialSample,
    TissueMask,
    TranscriptChunk,
)
from diffst.io.writers import (
    write_legacy_st,
    write_spaceranger_outs,
    write_visium_hd_outs,
    write_xenium_outs,
)

__all__ = [
    "SYNTHETIC_LABEL",
    "TissueLayout",
    "random_transcripts",
    "simulate_tissue",
    "write_legacy_st",
    "write_spaceranger_outs",
    "write_visium_hd_outs",
    "write_xenium_outs",
]

SYNTHETIC_LABEL = "synthetic"
_ROW_BLOCK = 256  # image rows rendered at once (bounds memory for large images)


@dataclass(frozen=True)
class TissueLayout:
    """Cells of a simulated section (all positions in µm)."""

    centers_um: np.ndarray
    """``[n_cells, 2]`` cell centres (x, y)."""
    cell_type: np.ndarray
    """``[n_cells]`` int, type of each cell."""
    gene_means: np.ndarray
    """``[K, G]`` mean counts per cell of each gene for each type."""
    radius_um: np.ndarray
    """``[n_cells]`` min(half the distance to the nearest other centre, 0.6 cell diameters):
    molecules lie within this disc, hence inside their own Voronoi cell and the section."""


def _layout(
    rng: np.random.Generator,
    width_um: float,
    height_um: float,
    n_genes: int,
    n_cell_types: int,
    cell_diameter_um: float,
    counts_per_cell: float,
) -> TissueLayout:
    """Jittered-grid cell centres inside an elliptic tissue; types from Voronoi regions."""
    step = cell_diameter_um
    gx, gy = np.meshgrid(np.arange(step / 2, width_um, step), np.arange(step / 2, height_um, step))
    pts = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-0.3, 0.3, (gx.size, 2)) * step
    cx, cy = width_um / 2, height_um / 2
    ax = max(cx - cell_diameter_um, 0.25 * width_um)
    ay = max(cy - cell_diameter_um, 0.25 * height_um)
    inside = ((pts[:, 0] - cx) / ax) ** 2 + ((pts[:, 1] - cy) / ay) ** 2 <= 1.0
    centers = pts[inside]
    n_regions = 3 * n_cell_types
    seeds = rng.uniform([0, 0], [width_um, height_um], (n_regions, 2))
    region_type = rng.permutation(np.arange(n_regions) % n_cell_types)
    cell_type = region_type[cKDTree(seeds).query(centers)[1]]
    base = rng.gamma(0.6, 1.0, (1, n_genes))
    programme = np.repeat(base, n_cell_types, axis=0)
    for k, genes in enumerate(np.array_split(rng.permutation(n_genes), n_cell_types)):
        programme[k, genes] *= 8.0  # marker genes of type k
    gene_means = programme / programme.sum(axis=1, keepdims=True) * counts_per_cell
    dist, _ = cKDTree(centers).query(centers, k=2)
    radius = np.minimum(dist[:, 1] / 2, 0.6 * cell_diameter_um)
    return TissueLayout(centers, cell_type.astype(np.int64), gene_means, radius)


def _molecules(
    rng: np.random.Generator, layout: TissueLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson counts per cell and gene; each molecule uniform in a disc inside its cell."""
    size = rng.lognormal(0.0, 0.3, len(layout.centers_um))
    counts = rng.poisson(layout.gene_means[layout.cell_type] * size[:, None])
    cell, gene = np.nonzero(counts)
    reps = counts[cell, gene]
    cell, gene = np.repeat(cell, reps), np.repeat(gene, reps)
    r = layout.radius_um[cell] * np.sqrt(rng.random(len(cell)))
    theta = rng.uniform(0, 2 * np.pi, len(cell))
    xy = layout.centers_um[cell] + np.c_[r * np.cos(theta), r * np.sin(theta)]
    order = rng.permutation(len(cell))
    return xy[order], gene[order].astype(np.int32), cell[order]


def _type_palette(rng: np.random.Generator, k: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per type: base colour ``[K, C]`` (0–255) and texture frequency ``[K]`` (cycles per µm)."""
    if kind == "he":
        eosin = np.array([235.0, 150.0, 190.0])
        shift = rng.uniform(-40, 40, (k, 3)) * np.array([0.5, 1.0, 0.7])
        colours = np.clip(eosin + shift, 60, 250)
    else:
        colours = np.c_[rng.uniform(20, 60, k), rng.uniform(60, 200, k)]
    return colours, rng.uniform(0.15, 0.6, k)


def _render(
    rng: np.random.Generator,
    layout: TissueLayout,
    shape_hw: tuple[int, int],
    um_per_px: float,
    kind: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``[H, W, C]`` uint8 and tissue mask ``[H, W]``; row blocks keep memory bounded."""
    h, w = shape_hw
    colours, freq = _type_palette(rng, len(layout.gene_means), kind)
    tree = cKDTree(layout.centers_um)
    c = colours.shape[1]
    img = np.empty((h, w, c), np.uint8)
    mask = np.zeros((h, w), bool)
    xs = (np.arange(w) + 0.5) * um_per_px
    for r0 in range(0, h, _ROW_BLOCK):
        ys = (np.arange(r0, min(h, r0 + _ROW_BLOCK)) + 0.5) * um_per_px
        px, py = np.meshgrid(xs, ys)
        dist, idx = tree.query(np.c_[px.ravel(), py.ravel()], k=2)
        own = idx[:, 0]
        inside = dist[:, 0] <= 1.6 * layout.radius_um[own]
        t = layout.cell_type[own]
        texture = 0.5 + 0.5 * np.sin(2 * np.pi * freq[t] * (px.ravel() + 0.7 * py.ravel()))
        rel = dist[:, 0] / np.maximum(layout.radius_um[own], 1e-6)
        nucleus = rel < 0.45
        edge = (dist[:, 1] - dist[:, 0]) < 0.6
        val = colours[t] * (0.85 + 0.15 * texture[:, None])
        if kind == "he":
            val[nucleus] = np.array([90.0, 60.0, 140.0]) + 20 * texture[nucleus, None]
            val[edge] *= 0.8
            background = np.array([245.0, 243.0, 245.0])
        else:
            val[:, 0] = np.where(nucleus, 220.0, colours[t, 0]) * (0.85 + 0.15 * texture)
            background = np.zeros(2)
        val[~inside] = background
        val += rng.normal(0, 4, val.shape)
        rows = slice(r0, r0 + len(ys))
        img[rows] = np.clip(val, 0, 255).reshape(len(ys), w, c).astype(np.uint8)
        mask[rows] = inside.reshape(len(ys), w)
    return img, mask


def simulate_tissue(
    *,
    width_um: float = 200.0,
    height_um: float = 200.0,
    n_genes: int = 30,
    n_cell_types: int = 4,
    um_per_px: float = 0.5,
    seed: int = 0,
    image_kind: Literal["he", "fluorescence"] = "he",
    cell_diameter_um: float = 12.0,
    counts_per_cell: float = 60.0,
    n_control_genes: int = 2,
) -> SpatialSample:
    """Simulate a tissue section (labelled synthetic) with transcripts and an aligned image.

    Parameters
    ----------
    width_um, height_um
        Section size (µm); cells fill an ellipse one cell diameter inside the borders.
    n_genes
        Real genes ``G``; plus ``n_control_genes`` ``NegControlProbe_*`` controls with a
        uniform background of molecules (flagged in ``control``).
    n_cell_types
        Number of cell types ``K``, each with its own marker genes and image colour/texture.
    um_per_px
        Image pixel size (µm); the image is ``[ceil(H/s), ceil(W/s), C]`` with pixel
        ``(0, 0)``'s corner at µm ``(0, 0)``.
    seed
        Everything is deterministic given the seed.
    image_kind
        ``"he"`` (RGB) or ``"fluorescence"`` (DAPI, polyT).
    cell_diameter_um, counts_per_cell
        Cell spacing (µm) and mean molecules per cell.

    Returns
    -------
    SpatialSample
        In-memory transcripts, image, tissue mask; ``metadata`` holds the ground truth
        (cell centres, types, gene means) and ``synthetic=True``.
    """
    rng = np.random.default_rng(seed)
    layout = _layout(
        rng, width_um, height_um, n_genes, n_cell_types, cell_diameter_um, counts_per_cell
    )
    xy, gene, cell = _molecules(rng, layout)
    genes = tuple(f"Gene{g:03d}" for g in range(n_genes))
    genes += tuple(f"NegControlProbe_{i:05d}" for i in range(n_control_genes))
    n_bg = int(0.002 * len(gene) * n_control_genes)
    bg_xy = rng.uniform([0, 0], [width_um, height_um], (n_bg, 2))
    bg_gene = rng.integers(n_genes, n_genes + n_control_genes, n_bg).astype(np.int32)
    shape_hw = (int(np.ceil(height_um / um_per_px)), int(np.ceil(width_um / um_per_px)))
    pixels, mask = _render(rng, layout, shape_hw, um_per_px, image_kind)
    transform = AffineTransform.from_pixel_size(um_per_px)
    channels = ("R", "G", "B") if image_kind == "he" else ("DAPI", "polyT")
    control = np.arange(len(genes)) >= n_genes
    return SpatialSample(
        name=f"{SYNTHETIC_LABEL}_tissue_seed{seed}",
        platform=Platform.SYNTHETIC,
        image=SpatialImage(pixels, channels, transform, None, image_kind),
        transcripts=InMemoryTranscripts(
            np.r_[xy[:, 0], bg_xy[:, 0]],
            np.r_[xy[:, 1], bg_xy[:, 1]],
            np.r_[gene, bg_gene],
            genes,
            control,
        ),
        tissue_mask=TissueMask(mask, transform),
        metadata={
            "synthetic": True,
            "description": "simulated tissue (diffst.synthetic.simulate_tissue), not measured",
            "seed": seed,
            "cell_centers_um": layout.centers_um,
            "cell_type": layout.cell_type,
            "gene_means": layout.gene_means,
            "transcript_cell": np.r_[cell, np.full(n_bg, -1)],
            "size_um": (width_um, height_um),
        },
    )


def random_transcripts(
    n: int,
    *,
    n_genes: int = 100,
    width_um: float = 10_000.0,
    height_um: float = 10_000.0,
    chunk_size: int = 2_000_000,
    seed: int = 0,
) -> ChunkedTranscripts:
    """Stream ``n`` synthetic molecules (uniform positions, Zipf-like gene frequencies).

    Nothing is held in memory beyond one chunk; every pass yields the same molecules (chunk
    ``i`` is drawn from the generator seeded with ``(seed, i)``). For scale benchmarks.
    """
    weights = 1.0 / np.arange(1, n_genes + 1)
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0

    def chunks() -> Iterator[TranscriptChunk]:
        for i, start in enumerate(range(0, n, chunk_size)):
            m = min(chunk_size, n - start)
            rng = np.random.default_rng((seed, i))
            x = rng.random(m) * width_um
            y = rng.random(m) * height_um
            gene = np.searchsorted(cdf, rng.random(m), side="right").astype(np.int32)
            yield TranscriptChunk(x, y, gene)

    return ChunkedTranscripts(
        genes=tuple(f"Gene{g:05d}" for g in range(n_genes)),
        control=np.zeros(n_genes, dtype=bool),
        open_chunks=chunks,
    )
