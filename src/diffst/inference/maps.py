"""Super-resolved maps of a section (or of a region of it) as arrays, without writing files.

:func:`predict_maps` runs the tiling of :func:`diffst.inference.predict` — the same section inputs,
tiles on the section's LR grid, per-tile seeds from the whole-section tiling, blending and
central intervals — and returns the statistics on the section grid. With ``region`` only the
tiles holding a region bin are run (values there equal a whole-section run's); with ``box`` the
K samples of a box are kept too. :func:`diffst.inference.setup.tile_context` builds the
per-section inputs from a store manifest alone, so other networks (the regression baseline)
can be run on the very same tiles through ``tile_fn``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError
from diffst.inference.config import PredictConfig
from diffst.io.sample import SpatialSample

if TYPE_CHECKING:
    from diffst.inference.tiled import TileContext, TileFn

__all__ = ["SectionMaps", "predict_maps"]


@dataclass
class SectionMaps:
    """Maps of one section (count scale, per HR bin).

    Attributes
    ----------
    stats
        ``[5, G, H, W]`` float32 in :class:`~diffst.inference.uncertainty.Stat` order (point
        estimate, std, q05, q95, samples' mean); NaN where no tile was run.
    tissue
        ``[H, W]`` bool, in-tissue bins of the section.
    covered
        ``[H, W]`` bool, bins some tile covered.
    samples
        ``[K, G, h, w]`` the box's samples (each bin's from its most central tile), or ``None``.
    box
        ``(row, col, h, w)`` of the kept samples in the section grid, or ``None``.
    n_tiles
        Tiles run.
    ctx
        The tiling context (section inputs, image, geometry) the maps were made from.
    """

    stats: np.ndarray
    tissue: np.ndarray
    covered: np.ndarray
    samples: np.ndarray | None
    box: tuple[int, int, int, int] | None
    n_tiles: int
    ctx: TileContext


def predict_maps(
    checkpoint: str | os.PathLike[str] | None,
    sample: SpatialSample,
    cfg: PredictConfig | None = None,
    *,
    region: np.ndarray | None = None,
    box: tuple[int, int, int, int] | None = None,
    tile_fn: TileFn | None = None,
    ctx: TileContext | None = None,
    on_progress: Any = None,
) -> SectionMaps:
    """Predict a section's maps in this process (no files written).

    Parameters
    ----------
    checkpoint
        ``diffst train`` checkpoint or run folder; ``None`` with ``tile_fn`` and ``ctx`` (another
        network on the same tiles).
    sample
        The section (any reader).
    cfg
        Sampler, steps, K, seed, tiling (``diffst predict``'s options).
    region
        ``[H, W]`` bool on the section grid: run only the tiles that hold one of its bins.
    box
        ``(row, col, h, w)`` on the section grid whose K samples are kept (diffusion only).
    tile_fn, ctx
        Replace the diffusion sampling of a tile batch (see :data:`diffst.inference.tiled.TileFn`)
        and the tiling context it was built for.
    on_progress
        ``(done, total)`` callback over the tiles.
    """
    from diffst.distributed import init_distributed
    from diffst.inference.tiled import CentralSamples, blend_window, run_tiles

    cfg = cfg or PredictConfig()
    env = init_distributed(cfg.device)
    if env.world_size > 1:
        raise ConfigError("predict_maps runs in one process; use `diffst predict` under torchrun")
    bundle = None
    if checkpoint is not None:
        from diffst.inference.setup import set_up

        bundle, ctx = set_up(checkpoint, sample, cfg, env.device)
    if ctx is None:
        raise ConfigError("predict_maps: give a checkpoint, or tile_fn together with ctx")
    keep = None
    if box is not None:
        if bundle is None:
            raise ConfigError("predict_maps: samples are kept for diffusion checkpoints only")
        keep = CentralSamples(
            cfg.n_samples, ctx.n_genes, box[:2], box[2:], blend_window(ctx.patch, cfg.blend)
        )
    acc, n_tiles, _ = run_tiles(
        bundle, ctx, cfg, ctx.norm, env, on_progress,
        region=region, tile_fn=tile_fn, samples=keep,
    )  # fmt: skip
    covered = acc.covered()
    stats = acc.result(in_place=True)
    return SectionMaps(
        stats, ctx.inputs.tissue, covered, None if keep is None else keep.samples, box, n_tiles,
        ctx,
    )  # fmt: skip
