"""Tiny synthetic section for prepare/data tests (labelled synthetic; no real data)."""

from __future__ import annotations

import numpy as np

from diffst.geometry import AffineTransform
from diffst.io.sample import InMemoryTranscripts, SpatialImage, SpatialSample
from diffst.sections.config import PrepareConfig, SplitConfig, TissueConfig, ViewConfig

GENES = ("Gad1", "Slc17a7", "Mbp", "Pvalb", "Sst", "Blank-1")
WIDTH_UM, HEIGHT_UM = 200.0, 180.0
UM_PER_PX = 0.5


def synthetic_sample(n: int = 20_000, seed: int = 0, chunk_size: int = 3_000) -> SpatialSample:
    """Synthetic 200×180 µm section: 6 genes (one control), 2-channel 0.5 µm/px image."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, WIDTH_UM, n)
    y = rng.uniform(0, HEIGHT_UM, n)
    weights = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    gene = rng.choice(len(GENES), size=n, p=weights / weights.sum()).astype(np.int32)
    # gene 0 concentrated left, gene 1 right: a real spatial pattern
    left = (gene == 0) & (x > WIDTH_UM / 2) & (rng.random(n) < 0.7)
    x[left] -= WIDTH_UM / 2
    control = np.array([g.startswith("Blank") for g in GENES])
    tx = InMemoryTranscripts(x, y, gene, GENES, control, chunk_size=chunk_size)
    h, w = int(HEIGHT_UM / UM_PER_PX), int(WIDTH_UM / UM_PER_PX)
    yy, xx = np.mgrid[0:h, 0:w]
    dapi = 1000 + 800 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.normal(0, 50, (h, w))
    polyt = 500 + 2 * xx + rng.normal(0, 20, (h, w))
    pixels = np.stack([dapi, polyt], axis=-1).clip(0, 65535).astype(np.uint16)
    image = SpatialImage(
        pixels, ("DAPI", "polyT"), AffineTransform.from_pixel_size(UM_PER_PX), kind="fluorescence"
    )
    return SpatialSample("synthetic", "synthetic", image=image, transcripts=tx)


def small_config(**kw: object) -> PrepareConfig:
    """Config sized for :func:`synthetic_sample` (50×45 bins of 4 µm)."""
    base: dict[str, object] = dict(
        genes=4,
        hr_um=4.0,
        factor=2,
        patch=8,
        stride=4,
        views=ViewConfig(tissue_px=16, cell_grid=4, tile_px=4),
        split=SplitConfig(block_um=32.0, seed=1),
        tissue=TissueConfig(min_patch_fraction=0.5),
    )
    base.update(kw)
    return PrepareConfig(**base)  # type: ignore[arg-type]
