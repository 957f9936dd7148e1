"""Super-resolved maps of a section (or of a region of it) as arrays, without writing files.

:func:`predict_maps` runs the tiling of :func:`diffst.predict.predict` — the same section inputs,
tiles on the section's LR grid, per-tile seeds from the whole-section tiling, blending and
central intervals — and returns the statistics on the section grid. With ``region`` only the
tiles holding a region bin are run (values there equal a whole-section run's); with ``box`` the
K samples of a box are kept too. :func:`tile_context` builds the per-section inputs from a
store manifest alone, so other networks (the regression baseline) can be run on the very same
tiles through ``tile_fn``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError
from diffst.io.sample import SpatialSample
from diffst.predict.config import PredictConfig

if TYPE_CHECKING:
    from diffst.predict.tiled import TileContext, TileFn

__all__ = ["SectionMaps", "predict_maps", "tile_context"]


@dataclass
class SectionMaps:
    """Maps of one section (count scale, per HR bin).

    Attributes
    ----------
    stats
        ``[5, G, H, W]`` float32 in :class:`~diffst.predict.uncertainty.Stat` order (point
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


class _Uses:
    """The two fields of a checkpoint bundle that the image checks read."""

    def __init__(self, meta: dict[str, Any], use_histology: bool) -> None:
        from types import SimpleNamespace

        self.store_meta = meta
        self.config = SimpleNamespace(model=SimpleNamespace(use_histology=use_histology))


def tile_context(
    meta: dict[str, Any], use_histology: bool, sample: SpatialSample, cfg: PredictConfig,
    source: str | os.PathLike[str] = "checkpoint",
) -> TileContext:  # fmt: skip
    """Check a section against a store manifest and build its tiling context.

    Parameters
    ----------
    meta
        Store manifest as recorded in a checkpoint (``store_meta``: genes, geometry,
        normalisation, views, image, ``hr_size``, ``lr_size``).
    use_histology
        Whether the network reads the image (then the section must have a matching one).
    sample
        The section.
    cfg
        Prediction options (gene-subset policy).
    source
        Named in errors.
    """
    from diffst.data.transforms import NormStats
    from diffst.predict.api import _check_image, _view_config, resolve_genes
    from diffst.predict.spots import build_section_inputs
    from diffst.predict.tiled import TileContext
    from diffst.prepare.views import channel_indices, intensity_range

    norm = NormStats.from_dict(meta["normalisation"])
    if norm.kind == "minmax_patch":
        raise ConfigError(
            f"{source}: normalisation 'minmax_patch' scales each patch by its HR maximum, "
            "which a new section does not have; train with log1p_gene to predict sections"
        )
    genes = resolve_genes(meta["genes"], sample, cfg.allow_gene_subset)
    image, views = _check_image(sample, _Uses(meta, use_histology), _view_config(meta))
    inputs = build_section_inputs(sample, genes, meta)
    ranges = None
    if image is not None:
        chan = channel_indices(image, tuple(views.channels))
        ranges = intensity_range(image, chan, views.intensity_percentiles)
    return TileContext(
        inputs, norm, len(genes), image, views, ranges, int(meta["hr_size"]),
        int(meta["lr_size"]),
    )  # fmt: skip


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
        Replace the diffusion sampling of a tile batch (see :data:`diffst.predict.tiled.TileFn`)
        and the tiling context it was built for.
    on_progress
        ``(done, total)`` callback over the tiles.
    """
    from diffst.predict.tiled import CentralSamples, blend_window, run_tiles
    from diffst.train.distributed import init_distributed

    cfg = cfg or PredictConfig()
    env = init_distributed(cfg.device)
    if env.world_size > 1:
        raise ConfigError("predict_maps runs in one process; use `diffst predict` under torchrun")
    bundle = None
    if checkpoint is not None:
        from diffst.predict.api import _set_up

        bundle, ctx = _set_up(checkpoint, sample, cfg, env.device)
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
