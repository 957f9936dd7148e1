"""Simulated tissue for tests and benchmarks — **synthetic data, not measurements**.

:func:`simulate_tissue` lays out ``K`` cell types as Voronoi-like regions of Voronoi cells.
Each type has its own image colour/texture (H&E-like RGB or DAPI/polyT fluorescence) and its
own expression programme (gene means); per cell, counts are Poisson and each molecule is
placed inside its cell. Every sample says it is synthetic: ``name`` starts with
``synthetic``, ``platform == "synthetic"`` and ``metadata["synthetic"] is True``.

:func:`simulate_detail_section` is the public case where the **image carries detail below the
LR cell**: cell types that the image shows (nuclear size, DAPI brightness, chromatin texture),
a gene programme per type, types mixed cell by cell at scales below an LR cell. Interpolation
of the LR map recovers none of that detail; a model that reads the image can. Written in
Vizgen's format by :func:`write_merfish_outs`, it is read back by the real reader.

With ``image_kind="he"`` the same section is drawn as an H&E-like RGB image (Beer–Lambert
composition of haematoxylin and eosin): each type's nuclear size, haematoxylin density, chromatin
texture and eosin density. :func:`simulate_visium_pair` cuts two non-overlapping regions out of
one such section: a transcript-resolved training region, and a region written as a Visium Space
Ranger folder whose image has another stain (:class:`StainShift`), with its molecules kept as the
truth.

:func:`random_transcripts` streams uniformly placed molecules for scale benchmarks. Writers of
platform-format files (Vizgen MERFISH, Xenium, Visium, Visium HD, legacy ST) live in
:mod:`diffst.io.writers` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
    write_merfish_outs,
    write_spaceranger_outs,
    write_visium_hd_outs,
    write_xenium_outs,
)

__all__ = [
    "SYNTHETIC_LABEL",
    "StainShift",
    "TissueLayout",
    "VisiumPair",
    "crop_sample",
    "random_transcripts",
    "simulate_detail_section",
    "simulate_tissue",
    "simulate_visium_pair",
    "write_legacy_st",
    "write_merfish_outs",
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


@dataclass(frozen=True)
class _Looks:
    """How each cell type looks in the image (per type, ``[K]``)."""

    nucleus: np.ndarray  # nuclear radius as a share of the cell radius
    dapi: np.ndarray  # DAPI brightness of the nucleus (0–255)
    texture: np.ndarray  # chromatin texture frequency (cycles per µm)
    contrast: np.ndarray  # chromatin texture contrast (share of the brightness)


def _looks(rng: np.random.Generator, k: int) -> _Looks:
    """Distinct but overlapping looks: each property is spread over the types independently."""
    return _Looks(
        nucleus=rng.permutation(np.linspace(0.32, 0.72, k)),
        dapi=rng.permutation(np.linspace(105.0, 235.0, k)),
        texture=rng.permutation(np.linspace(0.25, 1.1, k)),
        contrast=rng.permutation(np.linspace(0.05, 0.45, k)),
    )


def _type_field(
    rng: np.random.Generator, centres: np.ndarray, k: int, size_um: tuple[float, float],
    scale_um: float, strength: float,
) -> np.ndarray:  # fmt: skip
    """Cell types drawn cell by cell from smooth, overlapping regional proportions.

    Each type has a smooth random field (Gaussian-filtered noise of correlation length
    ``scale_um``); proportions are a softmax of ``strength`` × the fields, and every cell draws
    its type independently, so neighbouring cells — the cells of one LR cell — mix types while
    the LR map still carries the regional composition.
    """
    from scipy import ndimage

    step = max(scale_um / 6.0, 1.0)
    shape = (int(np.ceil(size_um[1] / step)) + 1, int(np.ceil(size_um[0] / step)) + 1)
    fields = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), scale_um / step) for _ in range(k)]
    )
    fields /= np.maximum(fields.std(axis=(1, 2), keepdims=True), 1e-12)
    i = np.clip(np.rint(centres[:, 1] / step).astype(int), 0, shape[0] - 1)
    j = np.clip(np.rint(centres[:, 0] / step).astype(int), 0, shape[1] - 1)
    logits = strength * fields[:, i, j].T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(len(centres))[:, None]
    return (u > np.cumsum(p, axis=1)).sum(axis=1).astype(np.int64)


def _programmes(rng: np.random.Generator, k: int, n_genes: int, counts: float) -> np.ndarray:
    """``[K, G]`` mean molecules per cell: a shared base and marker genes per type."""
    base = rng.gamma(0.8, 1.0, (1, n_genes)) + 0.05
    programme = np.repeat(base, k, axis=0)
    for t, genes in enumerate(np.array_split(rng.permutation(n_genes), k)):
        programme[t, genes] *= rng.uniform(6.0, 12.0, len(genes))
    return programme / programme.sum(axis=1, keepdims=True) * counts


def _render_fluorescence(
    rng: np.random.Generator, layout: TissueLayout, looks: _Looks, rna: np.ndarray,
    shape_hw: tuple[int, int], um_per_px: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """DAPI + polyT image ``[H, W, 2]`` uint8 and tissue mask ``[H, W]``, row block by block.

    DAPI: each nucleus a disc of its type's radius share, brightness and chromatin texture
    (a per-cell jitter of ±10 % keeps types overlapping); polyT: the cytoplasm's RNA content
    (molecules of the cell) and a dimmer nucleus.
    """
    h, w = shape_hw
    tree = cKDTree(layout.centers_um)
    t = layout.cell_type
    jitter = rng.lognormal(0.0, 0.1, len(t))
    phase = rng.uniform(0, 2 * np.pi, len(t))
    cyto = 40.0 + 150.0 * rna / max(float(np.percentile(rna, 99)), 1e-9)
    img = np.empty((h, w, 2), np.uint8)
    mask = np.zeros((h, w), bool)
    xs = (np.arange(w) + 0.5) * um_per_px
    for r0 in range(0, h, _ROW_BLOCK):
        ys = (np.arange(r0, min(h, r0 + _ROW_BLOCK)) + 0.5) * um_per_px
        px, py = (a.ravel() for a in np.meshgrid(xs, ys))
        dist, idx = tree.query(np.c_[px, py], k=1)
        own = np.asarray(idx)
        radius = layout.radius_um[own]
        inside = dist <= 1.25 * radius
        rel = dist / np.maximum(radius, 1e-6)
        nucleus = rel < looks.nucleus[t[own]]
        wave = np.sin(2 * np.pi * looks.texture[t[own]] * (px + 0.6 * py) + phase[own])
        chromatin = 1.0 + looks.contrast[t[own]] * wave
        dapi = np.where(nucleus, looks.dapi[t[own]] * jitter[own] * chromatin, 8.0)
        polyt = np.where(nucleus, 0.5, 1.0) * cyto[own] * jitter[own]
        val = np.stack([dapi, polyt], axis=1)
        val[~inside] = 0.0
        val += rng.normal(0, 5, val.shape)
        rows = slice(r0, r0 + len(ys))
        img[rows] = np.clip(val, 0, 255).reshape(len(ys), w, 2).astype(np.uint8)
        mask[rows] = inside.reshape(len(ys), w)
    return img, mask


#: Ruifrok & Johnston's (2001) optical-density vectors of haematoxylin and eosin (unit, RGB):
#: the stains of the simulated H&E images
RUIFROK_HAEMATOXYLIN = (0.650, 0.704, 0.286)
RUIFROK_EOSIN = (0.072, 0.990, 0.105)
#: Macenko et al.'s (2009) reference stain vectors: another lab's haematoxylin (bluer) and
#: eosin (more magenta), the default target of :class:`StainShift`
MACENKO_HAEMATOXYLIN = (0.5626, 0.7201, 0.4062)
MACENKO_EOSIN = (0.2159, 0.8012, 0.5581)
_GLASS_OD = 0.02  # optical density of the bare slide (all channels)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _stain_matrix(h: tuple[float, float, float], e: tuple[float, float, float]) -> np.ndarray:
    """``[3, 3]`` rows haematoxylin, eosin and their residual (cross product), unit length."""
    hv, ev = _unit(h), _unit(e)
    return np.stack([hv, ev, _unit(tuple(np.cross(hv, ev)))])  # type: ignore[arg-type]


def _render_he(
    rng: np.random.Generator, layout: TissueLayout, looks: _Looks, eosin: np.ndarray,
    shape_hw: tuple[int, int], um_per_px: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """H&E-like RGB image ``[H, W, 3]`` uint8 and tissue mask ``[H, W]``, row block by block.

    Beer–Lambert composition with :data:`RUIFROK_HAEMATOXYLIN` and :data:`RUIFROK_EOSIN`: the
    nucleus (its type's radius share) holds haematoxylin at its type's density (``looks.dapi``
    mapped to 0.45–1.05 OD) modulated by its chromatin texture, the cytoplasm eosin at its type's
    density (``eosin``, OD); a per-cell jitter of ±10 % keeps types overlapping. Glass is
    near-white; pixel noise σ = 3 grey levels.
    """
    h, w = shape_hw
    tree = cKDTree(layout.centers_um)
    t = layout.cell_type
    jitter = rng.lognormal(0.0, 0.1, len(t))
    phase = rng.uniform(0, 2 * np.pi, len(t))
    hae = 0.45 + 0.6 * (looks.dapi - 105.0) / 130.0  # OD of the nucleus per type
    stains = _stain_matrix(RUIFROK_HAEMATOXYLIN, RUIFROK_EOSIN)[:2]
    img = np.empty((h, w, 3), np.uint8)
    mask = np.zeros((h, w), bool)
    xs = (np.arange(w) + 0.5) * um_per_px
    for r0 in range(0, h, _ROW_BLOCK):
        ys = (np.arange(r0, min(h, r0 + _ROW_BLOCK)) + 0.5) * um_per_px
        px, py = (a.ravel() for a in np.meshgrid(xs, ys))
        dist, idx = tree.query(np.c_[px, py], k=1)
        own = np.asarray(idx)
        tt = t[own]
        radius = layout.radius_um[own]
        inside = dist <= 1.25 * radius
        nucleus = dist / np.maximum(radius, 1e-6) < looks.nucleus[tt]
        wave = np.sin(2 * np.pi * looks.texture[tt] * (px + 0.6 * py) + phase[own])
        chromatin = 1.0 + looks.contrast[tt] * wave
        c_h = np.where(nucleus, hae[tt] * chromatin, 0.04) * jitter[own]
        c_e = np.where(nucleus, 0.1, eosin[tt] * (1.0 + 0.1 * wave)) * jitter[own]
        od = np.c_[c_h, c_e] @ stains
        od[~inside] = 0.0
        val = 255.0 * 10.0 ** -(od + _GLASS_OD) + rng.normal(0, 3, od.shape)
        rows = slice(r0, r0 + len(ys))
        img[rows] = np.clip(val, 0, 255).reshape(len(ys), w, 3).astype(np.uint8)
        mask[rows] = inside.reshape(len(ys), w)
    return img, mask


def simulate_detail_section(
    *,
    width_um: float = 800.0,
    height_um: float = 800.0,
    n_genes: int = 25,
    n_cell_types: int = 4,
    cell_diameter_um: float = 10.0,
    counts_per_cell: float = 40.0,
    mix_scale_um: float = 80.0,
    mix_strength: float = 1.5,
    um_per_px: float = 0.5,
    seed: int = 0,
    image_kind: Literal["fluorescence", "he"] = "fluorescence",
) -> SpatialSample:
    """A section whose image carries expression detail below the LR cell (labelled synthetic).

    Cells tile an irregular tissue at ``cell_diameter_um`` spacing; each cell draws its type from
    smooth regional proportions (:func:`_type_field`: correlation length ``mix_scale_um``), so
    types are mixed at the scale of single cells, well below an LR cell of 40 µm. Each type has
    its own gene programme (marker genes 6–12× the shared base; Poisson counts per cell, each
    molecule inside its cell) and its own look in a two-channel fluorescence image: nuclear
    radius, DAPI brightness and chromatin texture in DAPI, RNA content in polyT. With
    ``image_kind="he"`` the image is H&E-like RGB instead (:func:`_render_he`): nuclear radius,
    haematoxylin density and chromatin texture of the nucleus, eosin density of the cytoplasm.

    Parameters
    ----------
    width_um, height_um
        Section size (µm); the image covers it with pixel ``(0, 0)``'s corner at µm ``(0, 0)``.
    n_genes, n_cell_types
        Genes ``G`` (plus two ``Blank-*`` control barcodes) and cell types ``K``.
    cell_diameter_um, counts_per_cell
        Cell spacing and mean molecules per cell.
    mix_scale_um, mix_strength
        Correlation length and strength of the regional type proportions (0: types i.i.d.).
    um_per_px, seed
        Image pixel size; everything is deterministic given the seed.
    image_kind
        ``"fluorescence"`` (DAPI, polyT) or ``"he"`` (R, G, B).

    Returns
    -------
    SpatialSample
        In-memory transcripts, DAPI + polyT (or H&E) image and tissue mask; ``metadata`` holds
        the truth (cell centres, types, programmes, the looks of each type) and
        ``synthetic=True``.
    """
    rng = np.random.default_rng(seed)
    size = (width_um, height_um)
    step = cell_diameter_um
    gx, gy = np.meshgrid(np.arange(step / 2, width_um, step), np.arange(step / 2, height_um, step))
    pts = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-0.25, 0.25, (gx.size, 2)) * step
    # an irregular tissue: a rounded square (superellipse) with a wavy border, filling most of
    # the section and keeping two cell diameters from its edges
    cx, cy = width_um / 2, height_um / 2
    angle = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    wobble = 1.0 - 0.04 * (1 + np.sin(3 * angle + rng.uniform(0, 6.3))) - 0.02 * np.sin(7 * angle)
    rx, ry = width_um / 2 - 2 * step, height_um / 2 - 2 * step
    norm4 = ((pts[:, 0] - cx) / rx) ** 4 + ((pts[:, 1] - cy) / ry) ** 4
    inside = norm4 <= wobble**4
    centres = pts[inside]
    cell_type = _type_field(rng, centres, n_cell_types, size, mix_scale_um, mix_strength)
    programme = _programmes(rng, n_cell_types, n_genes, counts_per_cell)
    dist, _ = cKDTree(centres).query(centres, k=2)
    radius = np.minimum(dist[:, 1] / 2, 0.6 * cell_diameter_um)
    layout = TissueLayout(centres, cell_type, programme, radius)
    xy, gene, cell = _molecules(rng, layout)
    rna = np.bincount(cell, minlength=len(centres)).astype(np.float64)
    looks = _looks(rng, n_cell_types)
    shape_hw = (int(np.ceil(height_um / um_per_px)), int(np.ceil(width_um / um_per_px)))
    look_table = {k: v.tolist() for k, v in vars(looks).items()}
    if image_kind == "he":
        eosin = rng.permutation(np.linspace(0.12, 0.55, n_cell_types))  # OD of the cytoplasm
        look_table["eosin"] = eosin.tolist()
        pixels, mask = _render_he(rng, layout, looks, eosin, shape_hw, um_per_px)
        channels: tuple[str, ...] = ("R", "G", "B")
    else:
        pixels, mask = _render_fluorescence(rng, layout, looks, rna, shape_hw, um_per_px)
        channels = ("DAPI", "polyT")
    genes = (*(f"Gene{g:03d}" for g in range(n_genes)), "Blank-0001", "Blank-0002")
    n_bg = max(1, int(0.002 * len(gene)))
    bg_xy = rng.uniform([0, 0], [width_um, height_um], (n_bg, 2))
    bg_gene = rng.integers(n_genes, n_genes + 2, n_bg).astype(np.int32)
    transform = AffineTransform.from_pixel_size(um_per_px)
    return SpatialSample(
        name=f"{SYNTHETIC_LABEL}_detail_seed{seed}",
        platform=Platform.SYNTHETIC,
        image=SpatialImage(pixels, channels, transform, None, image_kind),
        transcripts=InMemoryTranscripts(
            np.r_[xy[:, 0], bg_xy[:, 0]],
            np.r_[xy[:, 1], bg_xy[:, 1]],
            np.r_[gene, bg_gene],
            genes,
            np.arange(len(genes)) >= n_genes,
        ),
        tissue_mask=TissueMask(mask, transform),
        metadata={
            "synthetic": True,
            "description": "simulated section with image-borne detail below the LR cell "
            "(diffst.synthetic.simulate_detail_section), not measured",
            "seed": seed,
            "cell_centers_um": centres,
            "cell_type": cell_type,
            "gene_means": programme,
            "transcript_cell": np.r_[cell, np.full(n_bg, -1)],
            "looks": look_table,
            "size_um": size,
        },
    )


@dataclass(frozen=True)
class StainShift:
    """A deterministic change of H&E stain: another lab's haematoxylin and eosin.

    Each pixel's optical density ``OD = −log10(I / 255)`` (``I`` clipped to ≥ 1) is unmixed into
    haematoxylin, eosin and residual amounts with the source stain vectors (Ruifrok & Johnston's,
    those :func:`simulate_detail_section` draws with); the haematoxylin amount is multiplied by
    ``haematoxylin_gain`` and the eosin amount by ``eosin_gain``, and the densities are put back
    together with the target vectors ``haematoxylin_rgb`` / ``eosin_rgb`` (default: Macenko et
    al.'s reference vectors, a bluer haematoxylin and a more magenta eosin), then
    ``I' = 255 · 10^(−OD')``. Glass (OD ≈ 0) stays near-white; the default darkens nuclei and pales
    the cytoplasm. The identity is ``StainShift(1, 1, RUIFROK_HAEMATOXYLIN, RUIFROK_EOSIN)``.
    """

    haematoxylin_gain: float = 1.3
    eosin_gain: float = 0.6
    haematoxylin_rgb: tuple[float, float, float] = MACENKO_HAEMATOXYLIN
    eosin_rgb: tuple[float, float, float] = MACENKO_EOSIN
    source_haematoxylin_rgb: tuple[float, float, float] = RUIFROK_HAEMATOXYLIN
    source_eosin_rgb: tuple[float, float, float] = RUIFROK_EOSIN

    def matrix(self) -> np.ndarray:
        """``[3, 3]`` linear map of optical densities (row vectors: ``OD' = OD @ M``)."""
        src = _stain_matrix(self.source_haematoxylin_rgb, self.source_eosin_rgb)
        dst = _stain_matrix(self.haematoxylin_rgb, self.eosin_rgb)
        gains = np.diag([self.haematoxylin_gain, self.eosin_gain, 1.0])
        return np.asarray(np.linalg.inv(src) @ gains @ dst)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The image ``[H, W, 3]`` uint8 under the new stain (same shape and dtype)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"StainShift needs an [H, W, 3] RGB image, got shape {rgb.shape}")
        m = self.matrix()
        out = np.empty(rgb.shape, np.uint8)
        for r0 in range(0, rgb.shape[0], _ROW_BLOCK):
            block = np.maximum(np.asarray(rgb[r0 : r0 + _ROW_BLOCK], np.float64), 1.0)
            od = -np.log10(block / 255.0) @ m
            out[r0 : r0 + _ROW_BLOCK] = np.clip(np.rint(255.0 * 10.0**-od), 0, 255)
        return out

    def apply(self, sample: SpatialSample) -> SpatialSample:
        """``sample`` with its (RGB) image restained; ``metadata["stain_shift"]`` records it."""
        if sample.image is None or sample.image.kind != "he":
            raise ValueError(f"sample {sample.name!r}: StainShift needs an H&E image")
        image = dataclasses.replace(sample.image, pixels=self(np.asarray(sample.image.pixels)))
        meta = {**sample.metadata, "stain_shift": dataclasses.asdict(self)}
        return dataclasses.replace(sample, image=image, metadata=meta)


def crop_sample(
    sample: SpatialSample, extent_um: tuple[float, float, float, float], name: str | None = None
) -> SpatialSample:
    """The rectangle ``(x0, y0, x1, y1)`` µm of an in-memory synthetic sample, in its own frame.

    Molecules with ``x0 ≤ x < x1`` and ``y0 ≤ y < y1`` are kept and shifted by ``(−x0, −y0)``;
    the image and tissue mask are cut to the same rectangle, so pixel ``(0, 0)``'s corner sits
    at µm ``(0, 0)`` again (what the platform writers need). ``x0, y0, x1, y1`` must be
    multiples of the image's pixel size. ``metadata`` keeps the cells whose centre lies inside
    (shifted) and ``transcript_cell`` of the kept molecules, and records ``crop_um``.
    """
    if sample.image is None or not isinstance(sample.transcripts, InMemoryTranscripts):
        raise ValueError(f"sample {sample.name!r}: crop needs an image and in-memory molecules")
    s = sample.image.um_per_px
    x0, y0, x1, y1 = extent_um
    edges = np.array(extent_um) / s
    if not np.allclose(edges, np.rint(edges), atol=1e-6) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop {extent_um} µm: need x0 < x1, y0 < y1 on the {s} µm pixel grid")
    c0, r0, c1, r1 = (int(v) for v in np.rint(edges))
    tx = sample.transcripts
    keep = (tx.x_um >= x0) & (tx.x_um < x1) & (tx.y_um >= y0) & (tx.y_um < y1)
    transcripts = dataclasses.replace(
        tx, x_um=tx.x_um[keep] - x0, y_um=tx.y_um[keep] - y0, gene=tx.gene[keep]
    )
    transform = AffineTransform.from_pixel_size(s)
    image = dataclasses.replace(
        sample.image,
        pixels=np.ascontiguousarray(np.asarray(sample.image.pixels)[r0:r1, c0:c1]),
        um_to_px=transform,
    )
    mask = None
    if sample.tissue_mask is not None:
        mask = TissueMask(sample.tissue_mask.mask[r0:r1, c0:c1].copy(), transform)
    meta = dict(sample.metadata)
    meta["crop_um"] = (float(x0), float(y0), float(x1), float(y1))
    meta["size_um"] = (float(x1 - x0), float(y1 - y0))
    if "transcript_cell" in meta:
        meta["transcript_cell"] = np.asarray(meta["transcript_cell"])[keep]
    if "cell_centers_um" in meta:
        centres = np.asarray(meta["cell_centers_um"])
        inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1)
        inside &= (centres[:, 1] >= y0) & (centres[:, 1] < y1)
        meta["cell_centers_um"] = centres[inside] - np.array([x0, y0])
        if "cell_type" in meta:
            meta["cell_type"] = np.asarray(meta["cell_type"])[inside]
    return dataclasses.replace(
        sample,
        name=name or f"{sample.name}_crop",
        image=image,
        transcripts=transcripts,
        tissue_mask=mask,
        source_files={},
        metadata=meta,
    )


@dataclass(frozen=True)
class VisiumPair:
    """What :func:`simulate_visium_pair` returns (all of it synthetic)."""

    train: SpatialSample
    """The training region: molecules and its H&E image (section frame: its own rectangle starts
    at µm ``(0, 0)``)."""
    visium_dir: Path
    """Space Ranger ``outs/`` folder of the other region (restained image); read it with
    :func:`diffst.read_visium`."""
    truth: SpatialSample
    """The Visium region's molecules and its image in the *training* stain, in the frame of the
    Visium folder (µm = full-resolution pixel × µm/px): bin it on a prediction's grid."""
    train_extent_um: tuple[float, float, float, float]
    """Training rectangle ``(x0, y0, x1, y1)`` in the simulated section, µm."""
    visium_extent_um: tuple[float, float, float, float]
    """Visium rectangle in the simulated section, µm (no overlap with the training one)."""
    stain: StainShift | None
    """The stain change of the Visium image (``None``: the training stain)."""


def simulate_visium_pair(
    out_dir: Path | str,
    *,
    train_width_um: float = 800.0,
    visium_width_um: float = 600.0,
    height_um: float = 800.0,
    gap_um: float = 100.0,
    n_genes: int = 25,
    n_cell_types: int = 4,
    cell_diameter_um: float = 10.0,
    counts_per_cell: float = 40.0,
    mix_scale_um: float = 80.0,
    mix_strength: float = 1.5,
    um_per_px: float = 0.5,
    hires_scalef: float = 0.5,
    stain: StainShift | None = StainShift(),
    seed: int = 0,
) -> VisiumPair:
    """One synthetic H&E section → a transcript-resolved training region and a Visium region.

    The section (:func:`simulate_detail_section` with ``image_kind="he"``, labelled synthetic) is
    ``train_width_um + gap_um + visium_width_um`` wide and ``height_um`` tall; cell types mix
    cell by cell at scales well below the 100 µm spot pitch and the image shows each cell's
    type. Its left ``train_width_um`` are the training region (molecules + image); its right
    ``visium_width_um`` — ``gap_um`` further on, so no cell is shared — are written by
    :func:`~diffst.io.writers.write_spaceranger_outs` as a Visium folder (55 µm spots on the
    100 µm hex lattice, counts = molecules within each spot, the image as full resolution and
    ``hires_scalef`` for ``tissue_hires_image.png``), its image first restained by ``stain``.

    Parameters
    ----------
    out_dir
        The Visium ``outs/`` folder to write.
    train_width_um, visium_width_um, height_um, gap_um
        Region sizes (µm); multiples of ``um_per_px``.
    n_genes, n_cell_types, cell_diameter_um, counts_per_cell, mix_scale_um, mix_strength
        As :func:`simulate_detail_section`.
    um_per_px
        Full-resolution pixel size (µm).
    hires_scalef
        Scale of the written hires image (Space Ranger's ``tissue_hires_scalef``).
    stain
        Stain change applied to the Visium image (:class:`StainShift`); ``None`` keeps the
        training stain.
    seed
        Everything is deterministic given the seed.

    Returns
    -------
    VisiumPair
        The training sample, the Visium folder, the Visium region's truth and both rectangles.
    """
    width = train_width_um + gap_um + visium_width_um
    section = simulate_detail_section(
        width_um=width, height_um=height_um, n_genes=n_genes, n_cell_types=n_cell_types,
        cell_diameter_um=cell_diameter_um, counts_per_cell=counts_per_cell,
        mix_scale_um=mix_scale_um, mix_strength=mix_strength, um_per_px=um_per_px, seed=seed,
        image_kind="he",
    )  # fmt: skip
    train_box = (0.0, 0.0, train_width_um, height_um)
    visium_box = (train_width_um + gap_um, 0.0, width, height_um)
    description = "simulated H&E section (diffst.synthetic.simulate_visium_pair), not measured"
    section.metadata["description"] = description
    train = crop_sample(section, train_box, f"{SYNTHETIC_LABEL}_visium_pair_train_seed{seed}")
    truth = crop_sample(section, visium_box, f"{SYNTHETIC_LABEL}_visium_pair_truth_seed{seed}")
    written = stain.apply(truth) if stain is not None else truth
    folder = write_spaceranger_outs(written, out_dir, hires_scalef=hires_scalef)
    return VisiumPair(train, Path(folder), truth, train_box, visium_box, stain)


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
