"""Whole-section tiling: tile origins over the tissue, blending windows, streaming stitching.

A section's HR grid ``[H, W]`` is covered by square tiles of ``P × P`` bins (the model's patch
side) placed on a regular lattice with stride ``P − overlap``. The stride is a multiple of the
LR factor so every tile's LR input is an exact block of the section's LR raster. Tiles may
reach past the grid's bottom/right edge; the part outside is dropped when stitching. Tiles
with no tissue bin are skipped.

Overlapping tiles are blended with per-bin weights ``w``: the stitched value of a bin is
``Σ_t w_t(bin) · v_t(bin) / Σ_t w_t(bin)``. That is right for point estimates (the blend of
means is the mean of the blend) but not for spreads and quantiles: an average of two tiles'
5 % quantiles is the quantile of no distribution. Those channels are therefore *central*: a bin
takes them from the one tile in which it is most central (the largest window weight; ties go to
the lower tile index), so every stitched interval is a real interval of one tile's samples.
:class:`TileAccumulator` keeps only the sums, the central values and the winning weights
(``[S, G, H, W]`` and ``[H, W]``), so memory is bounded by the section grid whatever the number
of tiles, and tiles can be produced lazily batch by batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.geometry import GeometryError

if TYPE_CHECKING:
    import torch

    from diffst.inference.config import PredictConfig
    from diffst.sections.inputs import SectionInputs

_log = logging.getLogger("diffst.inference")

__all__ = [
    "CentralSamples",
    "TileAccumulator",
    "TileContext",
    "TileFn",
    "blend_window",
    "iter_batches",
    "run_tiles",
    "sample_tiles",
    "select_tiles",
    "tile_origins",
    "tile_seeds",
    "tile_stride",
]


def tile_stride(patch: int, overlap: int | None, factor: int) -> int:
    """Stride between tile origins, in HR bins.

    Parameters
    ----------
    patch
        Tile side ``P`` in HR bins.
    overlap
        Requested overlap in HR bins (``None`` = ``P // 4``).
    factor
        HR bins per LR cell side; the stride is rounded down to a multiple of it (at least one
        LR cell), so the realised overlap is ≥ the requested one.
    """
    if patch < 1 or factor < 1:
        raise GeometryError(f"patch ({patch}) and factor ({factor}) must be ≥ 1")
    overlap = patch // 4 if overlap is None else overlap
    if overlap >= patch:
        raise GeometryError(f"tile overlap {overlap} bins must be smaller than the patch {patch}")
    stride = ((patch - overlap) // factor) * factor
    return max(stride, factor)


def _axis_starts(n: int, patch: int, stride: int) -> np.ndarray:
    """Starts ``0, stride, 2·stride, …`` until a tile reaches the end of an axis of ``n`` bins."""
    n_tiles = 1 if n <= patch else 1 + int(np.ceil((n - patch) / stride))
    return np.arange(n_tiles, dtype=np.int64) * stride


def tile_origins(tissue: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Top-left HR bins of the tiles that cover every tissue bin.

    Parameters
    ----------
    tissue
        ``[H, W]`` bool, HR bins inside tissue.
    patch, stride
        Tile side and stride in HR bins.

    Returns
    -------
    np.ndarray
        ``[n_tiles, 2]`` int64 ``(row, col)`` origins, row-major; tiles containing no tissue bin
        are left out.
    """
    tissue = np.asarray(tissue, dtype=bool)
    if tissue.ndim != 2:
        raise GeometryError(f"tissue mask must be [H, W], got shape {tissue.shape}")
    rows = _axis_starts(tissue.shape[0], patch, stride)
    cols = _axis_starts(tissue.shape[1], patch, stride)
    # integral image: tissue count of any tile in O(1)
    integral = np.pad(np.cumsum(np.cumsum(tissue, 0), 1), ((1, 0), (1, 0)))
    h, w = tissue.shape
    keep = []
    for r in rows:
        r1 = min(r + patch, h)
        for c in cols:
            c1 = min(c + patch, w)
            n_in = integral[r1, c1] - integral[r, c1] - integral[r1, c] + integral[r, c]
            if n_in > 0:
                keep.append((r, c))
    return np.asarray(keep, dtype=np.int64).reshape(-1, 2)


def blend_window(patch: int, kind: str = "cosine") -> np.ndarray:
    """Blending weights of one tile, ``[P, P]`` float64, maximum 1.

    ``"cosine"`` is the separable Hann window sampled at bin centres,
    ``w(i, j) = sin²(π(i + ½)/P) · sin²(π(j + ½)/P)``: smooth, highest in the tile centre and
    strictly positive everywhere (smallest value ``sin⁴(π/2P)``), so every bin covered by at
    least one tile gets a well-defined blend. ``"uniform"`` is all ones.
    """
    if kind == "uniform":
        return np.ones((patch, patch))
    if kind != "cosine":
        raise ValueError(f"unknown blend window {kind!r} (cosine or uniform)")
    w1 = np.sin(np.pi * (np.arange(patch) + 0.5) / patch) ** 2
    return np.outer(w1, w1)


def tile_seeds(seed: int, tile_index: int, n_samples: int) -> list[int]:
    """Seeds of the ``K`` samples of one tile, derived from ``(seed, tile_index)`` only.

    Results therefore do not depend on the batch size, tile order or number of GPUs.
    """
    state = np.random.SeedSequence([int(seed), int(tile_index)]).generate_state(
        n_samples, dtype=np.uint32
    )
    return [int(s) for s in state]


#: automatic tile batches on a CPU (``predict.batch_size = 0``) keep the widest tensor of one
#: network call (tiles × K samples × width × P² fp32 values) within this many bytes
AUTO_BATCH_BYTES = 4 << 20
#: automatic tile batch on other devices
AUTO_BATCH_OTHER = 4


def tile_batch_size(
    cfg: Any, base_channels: int | None, n_genes: int, patch: int, device: torch.device
) -> int:
    """Tiles per network batch: ``cfg.batch_size``, or for 0 (automatic) on a CPU the most tiles
    whose K samples keep a call's widest tensor within :data:`AUTO_BATCH_BYTES`, at least 1.

    The width per sample is the larger of the UNet's ``base_channels`` and ``4·n_genes`` (the
    sampler's maps: input, prediction, variance and estimate, G channels each), so that a small
    network's calls batch many tiles (saving the per-call overhead) and a large panel's stay as
    small as one tile. Elsewhere, or for a network of unknown width (``base_channels=None``),
    :data:`AUTO_BATCH_OTHER`. The values do not depend on it beyond the last float bits
    (per-tile seeds)."""
    if cfg.batch_size > 0:
        return int(cfg.batch_size)
    if device.type != "cpu" or base_channels is None:
        return AUTO_BATCH_OTHER
    per_tile = 4 * cfg.n_samples * max(base_channels, 4 * n_genes) * patch * patch
    return max(1, AUTO_BATCH_BYTES // per_tile)


def iter_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Indices ``[b]`` of consecutive batches of at most ``batch_size`` out of ``range(n)``."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


class TileAccumulator:
    """Streaming weighted sum of tile values onto the section grid.

    Parameters
    ----------
    n_channels
        Leading dimensions of each tile's values, e.g. ``(5, G)`` for the statistics of
        :class:`~diffst.inference.uncertainty.Stat` × genes.
    shape_hr
        Section grid ``(H, W)`` in HR bins.
    window
        ``[P, P]`` blending weights of one tile.
    dtype
        Dtype of the value buffer (float32 keeps a ``[5, G, H, W]`` section in 20·G·H·W bytes);
        the weight buffer is float64.
    central
        Indices along the first channel axis taken from the tile where each bin is most central
        instead of blended (the std and quantile statistics).
    origin
        Section bin ``(row, col)`` of this grid's first bin: an accumulator over one block of a
        section (:mod:`diffst.inference.streamed`) takes tiles at their section origins and keeps
        the part of each tile that falls on the block.
    """

    def __init__(
        self,
        n_channels: Sequence[int],
        shape_hr: tuple[int, int],
        window: np.ndarray,
        dtype: np.dtype | type = np.float32,
        central: Sequence[int] = (),
        origin: tuple[int, int] = (0, 0),
    ) -> None:
        self.origin = (int(origin[0]), int(origin[1]))
        self.channels = tuple(int(c) for c in n_channels)
        self.shape_hr = (int(shape_hr[0]), int(shape_hr[1]))
        self.window = np.asarray(window, dtype=np.float64)
        self.patch = self.window.shape[0]
        self.values = np.zeros((*self.channels, *self.shape_hr), dtype=dtype)
        self.weights = np.zeros(self.shape_hr, dtype=np.float64)
        self.central = tuple(sorted({int(c) for c in central}))
        if any(not 0 <= c < self.channels[0] for c in self.central):
            raise ValueError(f"central channels {self.central} outside 0..{self.channels[0] - 1}")
        self.blended = tuple(ch for ch in range(self.channels[0]) if ch not in self.central)
        self.best = np.zeros(self.shape_hr, dtype=np.float64)  # window weight of the central tile
        self.best_tile = np.full(self.shape_hr, np.iinfo(np.int64).max, dtype=np.int64)

    def reset(self, origin: tuple[int, int], shape_hr: tuple[int, int]) -> None:
        """Start over on another grid of at most the allocated size (the buffers are kept and
        zeroed, so one accumulator serves every block of a streamed section without
        allocating section-block-sized arrays again)."""
        h, w = int(shape_hr[0]), int(shape_hr[1])
        if h > self.values.shape[-2] or w > self.values.shape[-1]:
            raise ValueError(f"grid {(h, w)} exceeds the accumulator's {self.values.shape[-2:]}")
        self.origin = (int(origin[0]), int(origin[1]))
        self.shape_hr = (h, w)
        self.values.fill(0)
        self.weights.fill(0)
        self.best.fill(0)
        self.best_tile.fill(np.iinfo(np.int64).max)

    def add(
        self, origin: tuple[int, int] | np.ndarray, tile: np.ndarray, tile_index: int = 0
    ) -> None:
        """Add one tile ``[*channels, P, P]`` whose top-left bin is ``origin`` ``(row, col)``
        (section bins; the part of the tile outside this grid is dropped).

        ``tile_index`` breaks ties between equally central tiles (the lower index wins), so the
        result does not depend on the order in which tiles arrive.
        """
        tile = np.asarray(tile)
        expected = (*self.channels, self.patch, self.patch)
        if tile.shape != expected:
            raise ValueError(f"tile has shape {tile.shape}, expected {expected}")
        r, c = int(origin[0]) - self.origin[0], int(origin[1]) - self.origin[1]
        h, w = self.shape_hr
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + self.patch, h), min(c + self.patch, w)
        if r1 <= r0 or c1 <= c0:
            raise GeometryError(
                f"tile at {(int(origin[0]), int(origin[1]))} lies outside the grid "
                f"{self.shape_hr} at {self.origin}"
            )
        rows, cols = slice(r0 - r, r1 - r), slice(c0 - c, c1 - c)
        win = self.window[rows, cols]
        for ch in self.blended:
            self.values[ch, ..., r0:r1, c0:c1] += (tile[ch, ..., rows, cols] * win).astype(
                self.values.dtype
            )
        self.weights[r0:r1, c0:c1] += win
        if self.central:
            best = self.best[r0:r1, c0:c1]
            owner = self.best_tile[r0:r1, c0:c1]
            wins = (win > best) | ((win == best) & (tile_index < owner))
            for ch in self.central:
                part = self.values[ch, ..., r0:r1, c0:c1]
                part[..., wins] = tile[ch, ..., rows, cols][..., wins]
            best[wins] = win[wins]
            owner[wins] = tile_index

    def merge(self, other: TileAccumulator) -> None:
        """Add the sums of another accumulator over the same grid (e.g. from another rank);
        central channels keep the more central tile of the two."""
        if other.values.shape != self.values.shape:
            raise ValueError("accumulators cover different grids")
        keep = {ch: self.values[ch].copy() for ch in self.central}
        for ch in self.blended:
            self.values[ch] += other.values[ch]
        self.weights += other.weights
        if self.central:
            wins = (other.best > self.best) | (
                (other.best == self.best) & (other.best_tile < self.best_tile)
            )
            for ch, mine in keep.items():
                self.values[ch] = np.where(wins, other.values[ch], mine)
            self.best = np.where(wins, other.best, self.best)
            self.best_tile = np.where(wins, other.best_tile, self.best_tile)

    def covered(self) -> np.ndarray:
        """``[H, W]`` bool: bins that received at least one tile."""
        return self.weights > 0

    def result(self, in_place: bool = False) -> np.ndarray:
        """Blended values ``[*channels, H, W]`` (central channels as kept); bins no tile covered
        are NaN.

        ``in_place=True`` divides the value buffer itself (no second section-sized array); the
        accumulator must not be used afterwards until :meth:`reset`.
        """
        out = self.values if in_place else self.values.copy()
        scale = self.weights.astype(out.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            for ch in self.blended:
                np.divide(out[ch], scale, out=out[ch])
        out[..., ~self.covered()] = np.nan
        return out


class CentralSamples:
    """The K samples of every bin of a box, each bin's from the tile where it is most central.

    For scoring (CRPS, coverage curves) on a held-out region: ``[K, G, h, w]`` for the box at
    ``origin`` of the section grid; tiles outside the box are ignored.
    """

    def __init__(
        self, k: int, n_genes: int, origin: tuple[int, int], shape: tuple[int, int],
        window: np.ndarray,
    ) -> None:  # fmt: skip
        self.origin = (int(origin[0]), int(origin[1]))
        self.shape = (int(shape[0]), int(shape[1]))
        self.window = np.asarray(window, dtype=np.float64)
        self.samples = np.zeros((k, n_genes, *self.shape), dtype=np.float32)
        self.best = np.zeros(self.shape, dtype=np.float64)
        self.best_tile = np.full(self.shape, np.iinfo(np.int64).max, dtype=np.int64)

    def add(self, origin: tuple[int, int] | np.ndarray, tile: np.ndarray, tile_index: int) -> None:
        """Offer one tile's samples ``[K, G, P, P]`` at section origin ``(row, col)``."""
        p = self.window.shape[0]
        r, c = int(origin[0]) - self.origin[0], int(origin[1]) - self.origin[1]
        h, w = self.shape
        r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + p, h), min(c + p, w)
        if r1 <= r0 or c1 <= c0:
            return
        win = self.window[r0 - r : r1 - r, c0 - c : c1 - c]
        best, owner = self.best[r0:r1, c0:c1], self.best_tile[r0:r1, c0:c1]
        wins = (win > best) | ((win == best) & (tile_index < owner))
        part = self.samples[..., r0:r1, c0:c1]
        part[..., wins] = np.asarray(tile)[..., r0 - r : r1 - r, c0 - c : c1 - c][..., wins]
        best[wins] = win[wins]
        owner[wins] = tile_index


@dataclass
class TileContext:
    """Per-section constants shared by all tiles."""

    inputs: SectionInputs
    norm: Any  # diffst.data.transforms.NormStats of the checkpoint
    n_genes: int  # G
    image: Any  # SpatialImage | None (None when the model has no histology branch)
    views: Any  # diffst.sections.config.ViewConfig
    ranges: np.ndarray | None  # [C, 2] image intensity range mapped to 0..255
    patch: int  # P, HR bins per tile side
    lr_size: int  # p, LR cells per tile side
    stain: Any = None  # diffst.sections.stain.StainTransform of the section's views, or None
    subspots: Any = None  # diffst.inference.subspots.SubspotFrame (spot-array checkpoints)
    missing: tuple[str, ...] = ()  # checkpoint genes the section lacks (LR imputed)
    impute: np.ndarray | None = None  # [G, G] imputation weights (inference.setup)

    @property
    def measured_genes(self) -> np.ndarray:
        """``[G]`` bool: genes the section measures (False: LR imputed, not projected)."""
        return ~np.isin(np.asarray(self.inputs.genes), np.asarray(self.missing, dtype=object))

    @property
    def count_scale(self) -> float:
        """LR counts are multiplied by this before the network and its outputs divided by it
        (``k²`` below the spot pitch, :mod:`diffst.inference.subspots`; else 1)."""
        return 1.0 if self.subspots is None else float(self.subspots.count_scale)


def tile_batch(ctx: TileContext, origins: np.ndarray, device: torch.device) -> dict[str, Any]:
    """Conditioning tensors of the tiles at ``origins [b, 2]`` (row, col)."""
    import torch

    from diffst.data.transforms import normalise
    from diffst.sections.inputs import window_inputs

    p, patch = ctx.lr_size, ctx.patch
    lr = np.empty((len(origins), ctx.n_genes, p, p), dtype=np.float32)
    lr_mask = np.empty((len(origins), 1, p, p), dtype=np.float32)
    tissue: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    score: list[np.ndarray] = []
    for k, (r, c) in enumerate(origins):
        w = window_inputs(
            ctx.inputs, int(r), int(c), patch, image=ctx.image, views=ctx.views,
            ranges=ctx.ranges, stain=ctx.stain,
        )  # fmt: skip
        lr[k] = normalise(np.zeros((ctx.n_genes, 1, 1)), w.lr * ctx.count_scale, ctx.norm)[1]
        if ctx.impute is not None:  # missing genes: the co-expressed measured genes' LR
            absent = ~ctx.measured_genes
            lr[k][absent] = np.tensordot(ctx.impute[absent], lr[k], axes=1)
        lr_mask[k, 0] = w.lr_mask
        if w.tissue_view is not None and w.cells is not None and w.cell_score is not None:
            tissue.append(w.tissue_view)
            cells.append(w.cells)
            score.append(w.cell_score)
    batch: dict[str, Any] = {
        "lr": torch.from_numpy(lr).to(device),
        "lr_mask": torch.from_numpy(lr_mask).to(device),
    }
    if ctx.image is not None:
        batch["tissue"] = torch.from_numpy(np.stack(tissue)).to(device).float() / 255.0
        batch["cells"] = torch.from_numpy(np.stack(cells)).to(device).float() / 255.0
        batch["cell_score"] = torch.from_numpy(np.stack(score)).to(device).float()
    return batch


def sample_tiles(
    bundle: Any,
    ctx: TileContext,
    origins: np.ndarray,
    tile_index: np.ndarray,
    cfg: PredictConfig,
    norm: Any,
    device: torch.device,
    *,
    return_samples: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``[b, 5, G, P, P]`` count-scale statistics for each tile of a batch (axis 1 as
    :class:`~diffst.inference.uncertainty.Stat`): the point estimate of ``cfg.mean_estimator``,
    std, q05 and q95 of the K samples, and the samples' mean; with ``return_samples`` also the
    samples ``[b, K, G, P, P]`` (else ``None``)."""
    import torch

    from diffst.data.transforms import inverse_normalise
    from diffst.diffusion import sample_groups
    from diffst.inference.config import resolve_estimator
    from diffst.inference.uncertainty import Stat, sample_statistics
    from diffst.precision import autocast, native_bf16

    k, patch = cfg.n_samples, ctx.patch
    n_genes = ctx.n_genes
    sampler, steps = cfg.sampling(bundle.config.diffusion)
    seeds = [s for t in tile_index for s in tile_seeds(cfg.seed, int(t), k)]
    bf16 = cfg.precision == "bf16" and native_bf16(device)
    with torch.inference_mode(), autocast(device, bf16):
        cond = bundle.model.encode_condition(**tile_batch(ctx, origins, device)).repeat(k)
        x0, posterior = sample_groups(
            bundle.model, bundle.schedule, cond, (len(origins) * k, n_genes, patch, patch), k,
            sampler=sampler, steps=steps, eta=cfg.eta, seeds=seeds, device=device,
            clip_denoised=bundle.config.diffusion.clip_denoised,
            posterior_mean=resolve_estimator(cfg.mean_estimator, bundle.schedule.prediction)
            == "denoiser",
        )  # fmt: skip
        counts = inverse_normalise(x0.float(), norm) / ctx.count_scale
        stats = sample_statistics(counts)
        point = (
            stats[:, Stat.MEAN]
            if posterior is None
            else inverse_normalise(posterior.float(), norm) / ctx.count_scale
        )
        stats = torch.cat([point[:, None], stats[:, 1:], stats[:, :1]], dim=1)
    drawn = counts.cpu().numpy() if return_samples else None
    return stats.cpu().numpy(), drawn


def _reduce(arr: np.ndarray, env: Any, op: Any, everywhere: bool) -> None:
    """Reduce ``arr`` across ranks in place, in chunks, on the rank's device (rank 0 only, or
    every rank with ``everywhere``)."""
    import torch
    import torch.distributed as dist

    flat = arr.reshape(-1)
    step = 1 << 24
    for start in range(0, flat.size, step):
        part = torch.from_numpy(np.ascontiguousarray(flat[start : start + step])).to(env.device)
        if everywhere:
            dist.all_reduce(part, op=op)
        else:
            dist.reduce(part, dst=0, op=op)
        if everywhere or env.is_main:
            flat[start : start + step] = part.cpu().numpy()


def reduce_to_rank0(acc: Any, env: Any) -> None:
    """Sum every rank's accumulator into rank 0's; central channels come from the rank that
    holds the most central tile of each bin (ties: the lower tile index), as on one process."""
    import torch.distributed as dist

    if acc.central:
        best = acc.best.copy()
        _reduce(best, env, dist.ReduceOp.MAX, everywhere=True)
        owner = np.where(acc.best == best, acc.best_tile, np.iinfo(np.int64).max)
        _reduce(owner, env, dist.ReduceOp.MIN, everywhere=True)
        mine = acc.best_tile == owner
        for ch in acc.central:
            acc.values[ch][..., ~mine] = 0
        acc.best, acc.best_tile = best, owner
    for arr in (acc.values, acc.weights):
        _reduce(arr, env, dist.ReduceOp.SUM, everywhere=False)


def select_tiles(origins: np.ndarray, patch: int, region: np.ndarray) -> np.ndarray:
    """Indices of the tiles at ``origins [n, 2]`` whose window holds a bin of ``region [H, W]``."""
    region = np.asarray(region, dtype=bool)
    integral = np.pad(np.cumsum(np.cumsum(region, 0), 1), ((1, 0), (1, 0)))
    h, w = region.shape
    r0, c0 = origins[:, 0], origins[:, 1]
    r1, c1 = np.minimum(r0 + patch, h), np.minimum(c0 + patch, w)
    n_in = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return np.flatnonzero(n_in > 0)


TileFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
"""``(origins [b, 2], tile indices [b]) → (statistics [b, 5, G, P, P], samples [b, K, G, P, P] or
None)`` on the count scale: the network work of one batch of tiles."""


def run_tiles(
    bundle: Any, ctx: TileContext, cfg: PredictConfig, norm: Any, env: Any,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    region: np.ndarray | None = None,
    tile_fn: TileFn | None = None,
    samples: CentralSamples | None = None,
) -> tuple[Any, int, int]:  # fmt: skip
    """Sample this rank's tiles and blend them.

    ``on_progress(done, total)`` is called before the first batch and after each one with this
    rank's tiles done and in all. With ``region`` (``[H, W]`` bool) only the tiles that hold a
    region bin are run; each tile keeps its index in the whole-section tiling, so its seeds and
    values are those of a whole-section run. ``tile_fn`` replaces diffusion sampling (e.g. a
    regression network); ``samples`` collects the K samples of a box. Returns the accumulator
    (gathered on rank 0), the number of tiles run and the stride (bins).
    """
    from diffst.inference.uncertainty import N_STATS, Stat

    geometry = ctx.inputs.geometry
    stride = tile_stride(ctx.patch, cfg.overlap_bins, geometry.factor)
    origins = tile_origins(ctx.inputs.tissue, ctx.patch, stride)
    chosen = np.arange(len(origins)) if region is None else select_tiles(origins, ctx.patch, region)
    mine = chosen[env.rank :: env.world_size]
    n_genes = ctx.n_genes
    acc = TileAccumulator(
        (N_STATS, n_genes), geometry.shape_hr, blend_window(ctx.patch, cfg.blend),
        central=(Stat.STD, Stat.Q05, Stat.Q95),
    )  # fmt: skip
    _log.info(
        "%d tiles of %d bins (stride %d), %d on this rank",
        len(chosen),
        ctx.patch,
        stride,
        len(mine),
    )
    if tile_fn is None:

        def tile_fn(at: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            return sample_tiles(
                bundle, ctx, at, index, cfg, norm, env.device, return_samples=samples is not None
            )

    done = 0
    if on_progress is not None:
        on_progress(done, len(mine))
    width = None if bundle is None else bundle.model.cfg.base_channels
    batch_size = tile_batch_size(cfg, width, ctx.n_genes, ctx.patch, env.device)
    _log.info("%d tiles per network batch", batch_size)
    for batch in iter_batches(len(mine), batch_size):
        index = mine[batch]
        stats, drawn = tile_fn(origins[index], index)
        for k, (origin, tile) in enumerate(zip(origins[index], stats, strict=True)):
            acc.add(origin, tile, int(index[k]))
            if samples is not None and drawn is not None:
                samples.add(origin, drawn[k], int(index[k]))
        done += len(index)
        if on_progress is not None:
            on_progress(done, len(mine))
    if env.distributed:
        reduce_to_rank0(acc, env)
    return acc, len(chosen), stride
