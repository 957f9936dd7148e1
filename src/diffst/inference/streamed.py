"""Whole-section prediction in blocks, written to the h5ad as it goes: memory bounded by a block.

:func:`diffst.inference.api.predict` keeps five float32 statistics of every gene and HR bin in
memory (20 bytes per gene and bin, and as much again while it builds the AnnData): 2,000 genes on
a square centimetre of 10 µm bins would need some 80 GB. A streamed prediction instead

1. cuts the section's HR grid into square blocks (:func:`plan_blocks`: whole tile strides, so
   whole LR cells) whose statistics take at most ``PredictConfig.block_gib``;
2. runs, for each block, every tile of the whole-section tiling that holds one of the block's
   tissue bins. Tiles keep their whole-section index, so their seeds are those of a
   whole-section run and every bin is blended from exactly the tiles a whole-section run blends
   into it. A tile that crosses a block border is run once for each block it reaches
   (``uns['diffst']['streamed']['rerun_share']`` says how many runs that added);
3. writes the block's tissue bins (row-major inside the block) to ``X`` and the layers of the
   h5ad on disk, and adds their point prediction to the per-spot totals;
4. after the last block, scores the raw spot totals against the measured spots
   (``spot_consistency``) and, with ``project_to_spots``, rescales every spot's bins in a second
   pass over the file in chunks of rows — the arithmetic of
   :func:`~diffst.inference.spots.project_to_spots`;
5. writes ``obs``, ``var``, ``obsm`` and ``uns`` and moves the file into place atomically.

Memory is then one block's statistics plus what does not depend on the number of HR bins times
genes: the LR input (``G`` values per LR cell or spot), the ``[H, W]`` tissue mask and spot
index, and the per-spot totals. Under ``torchrun`` the tiles of each block are shared between
ranks and reduced to rank 0, which writes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from diffst.config import ConfigError

if TYPE_CHECKING:
    import anndata

    from diffst.inference.config import PredictConfig
    from diffst.inference.tiled import TileContext

_log = logging.getLogger("diffst.inference")

__all__ = [
    "BYTES_PER_GENE_BIN",
    "StreamedResult",
    "block_tiles",
    "check_streamable",
    "dense_stats_gib",
    "finish_h5ad",
    "plan_blocks",
    "run_streamed",
    "should_stream",
]

BYTES_PER_GENE_BIN = 20
"""Five float32 statistics per gene and HR bin (point estimate, std, q05, q95, samples' mean)."""

_BYTES_PER_BIN = 24  # an accumulator's blend weight, central weight and central tile per bin
_ROWS_PER_PASS = 1 << 22  # values (rows × genes) read at once in the projection pass


def dense_stats_gib(n_genes: int, shape_hr: tuple[int, int]) -> float:
    """GiB of the whole-section statistics ``[5, G, H, W]`` float32 of a non-streamed run."""
    return BYTES_PER_GENE_BIN * n_genes * shape_hr[0] * shape_hr[1] / 2**30


def should_stream(cfg: PredictConfig, n_genes: int, shape_hr: tuple[int, int]) -> bool:
    """``cfg.stream``: ``on``/``off``, or ``auto`` = stream when the whole-section statistics
    would exceed ``cfg.block_gib``."""
    if cfg.stream == "on":
        return True
    if cfg.stream == "off":
        return False
    return dense_stats_gib(n_genes, shape_hr) > cfg.block_gib


def plan_blocks(
    shape_hr: tuple[int, int], n_genes: int, stride: int, block_gib: float
) -> list[tuple[int, int, int, int]]:
    """Blocks ``(row0, col0, row1, col1)`` (HR bins, end exclusive) that tile the grid.

    The block side is the largest multiple of the tile ``stride`` (itself a multiple of the LR
    factor) whose accumulator — ``20·G + 24`` bytes per bin — fits in ``block_gib``, and at least
    one stride; blocks are row-major, the last row and column cut by the grid.
    """
    per_bin = BYTES_PER_GENE_BIN * n_genes + _BYTES_PER_BIN
    side = math.isqrt(int(block_gib * 2**30 // per_bin))
    side = max(stride, side // stride * stride)
    h, w = shape_hr
    return [
        (r, c, min(r + side, h), min(c + side, w))
        for r in range(0, h, side)
        for c in range(0, w, side)
    ]


def block_tiles(
    origins: np.ndarray, patch: int, integral: np.ndarray, block: tuple[int, int, int, int]
) -> np.ndarray:
    """Indices of the tiles at ``origins [n, 2]`` that hold a tissue bin of ``block``.

    ``integral`` is the ``[H + 1, W + 1]`` summed-area table of the tissue mask.
    """
    r0, c0, r1, c1 = block
    top = np.maximum(origins[:, 0], r0)
    left = np.maximum(origins[:, 1], c0)
    bottom = np.minimum(origins[:, 0] + patch, r1)
    right = np.minimum(origins[:, 1] + patch, c1)
    ok = (bottom > top) & (right > left)
    top, left = np.where(ok, top, 0), np.where(ok, left, 0)
    bottom, right = np.where(ok, bottom, 0), np.where(ok, right, 0)
    n_in = integral[bottom, right] - integral[top, right] - integral[bottom, left]
    n_in += integral[top, left]
    return np.flatnonzero(ok & (n_in > 0))


@dataclass
class StreamedResult:
    """What :func:`run_streamed` leaves for the caller (rank 0)."""

    tmp_path: Path  # the h5 file holding X and the layers (obs order: rows, cols)
    rows: np.ndarray  # [n] HR grid row of each observation
    cols: np.ndarray  # [n] HR grid column
    n_tiles: int  # tiles of the whole-section tiling that were run
    tile_runs: int  # tile evaluations, with re-runs at block borders
    blocks: list[tuple[int, int, int, int]]
    stride: int
    report: dict[str, Any]  # spot consistency (+ projected)
    predicted_counts: np.ndarray  # [G] Σ X (after the projection)
    mean_std: np.ndarray  # [G] mean of layers['std']

    def to_dict(self) -> dict[str, Any]:
        """``uns['diffst']['streamed']``."""
        side = self.blocks[0][2] - self.blocks[0][0] if self.blocks else 0
        return {
            "blocks": len(self.blocks),
            "block_side_bins": int(side),
            "tile_runs": int(self.tile_runs),
            "rerun_share": float(self.tile_runs / max(self.n_tiles, 1) - 1.0),
            "obs_order": "block by block (row-major blocks of block_side_bins, row-major bins "
            "inside each); obs bin_row / bin_col give each bin's place",
        }


def _even(n: int, most: int) -> int:
    """The chunk length that splits ``n`` into equal parts of at most ``most``."""
    return -(-n // -(-n // most))


class _Datasets:
    """``X`` and the sample statistics of an h5ad, created at their full size, filled by rows.

    The statistics of every gene go to ``layers/<key>``; with ``subset`` (gene indices) those
    genes' go to ``uncertainty/<key>`` (moved to ``obsm`` DataFrames by :func:`finish_h5ad`).
    ``columns[name]`` holds each dataset's gene indices.
    """

    def __init__(
        self, path: Path, n_obs: int, n_genes: int, subset: np.ndarray | None = None
    ) -> None:
        import h5py

        from diffst.inference.to_anndata import LAYER_STATS
        from diffst.inference.uncertainty import Stat

        self.file = h5py.File(path, "w")
        self.file.create_group("layers")
        every = np.arange(n_genes)
        group = "layers" if subset is None else "uncertainty"
        some = every if subset is None else np.asarray(subset, dtype=np.int64)
        self.stats: dict[str, int] = {"X": int(Stat.MEAN)}
        self.columns: dict[str, np.ndarray] = {"X": every}
        for key, stat in LAYER_STATS.items():
            if len(some):
                self.stats[f"{group}/{key}"] = int(stat)
                self.columns[f"{group}/{key}"] = some
        for name, cols in self.columns.items():
            # up to 4,096 bins × 64 genes (1 MiB) per chunk: reading a few genes back
            # (read_prediction) touches a 64-gene column of chunks, not the whole file; the
            # chunks split each axis evenly, so the last ones are not mostly empty
            width = len(cols)
            chunks = (_even(n_obs, 1 << 12), _even(width, 64)) if n_obs and width else None
            self.file.create_dataset(name, (n_obs, width), dtype="float32", chunks=chunks)

    def write(self, start: int, block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        """Rows ``start …`` from the bins ``(rows, cols)`` of a block's statistics
        ``[5, G, h, w]`` (axis 0 as ``Stat``), one statistic at a time."""
        n = len(rows)
        for name, stat in self.stats.items():
            genes = self.columns[name]
            part = block[stat][:, rows, cols]
            if len(genes) != block.shape[1]:
                part = part[genes]
            self.file[name][start : start + n] = part.T
            del part


def _spot_index(ctx: TileContext, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(spot of every bin [H, W], measured counts [n, G], bins per spot [n])``."""
    from diffst.inference.spots import assign_bins_to_spots

    geo = ctx.inputs.geometry
    centres, counts = ctx.inputs.spots
    spot_of_bin = assign_bins_to_spots(
        centres, ctx.inputs.spot_diameter_um, ctx.inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um, geo.hr_um, geo.shape_hr, bin_mask=tissue,
    )  # fmt: skip
    per_spot = np.bincount(spot_of_bin[spot_of_bin >= 0], minlength=len(centres))
    return spot_of_bin, np.asarray(counts), per_spot


def run_streamed(
    bundle: Any,
    ctx: TileContext,
    cfg: PredictConfig,
    env: Any,
    tmp_path: Path,
    genes: list[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> StreamedResult | None:
    """Predict the section block by block into ``tmp_path`` (module docstring, steps 1–4).

    Returns the observations' order, the spot report and the per-gene sums on rank 0 (``None``
    on the other ranks); the caller writes the annotations (:func:`finish_h5ad`).
    """
    from diffst.inference.tiled import (
        TileAccumulator,
        blend_window,
        iter_batches,
        reduce_to_rank0,
        sample_tiles,
        tile_batch_size,
        tile_origins,
        tile_stride,
    )
    from diffst.inference.uncertainty import N_STATS, Stat

    geometry = ctx.inputs.geometry
    tissue = ctx.inputs.tissue
    stride = tile_stride(ctx.patch, cfg.overlap_bins, geometry.factor)
    origins = tile_origins(tissue, ctx.patch, stride)
    integral = np.pad(np.cumsum(np.cumsum(tissue, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
    blocks = [
        b for b in plan_blocks(geometry.shape_hr, ctx.n_genes, stride, cfg.block_gib)
        if tissue[b[0] : b[2], b[1] : b[3]].any()
    ]  # fmt: skip
    per_block = [block_tiles(origins, ctx.patch, integral, b) for b in blocks]
    window = blend_window(ctx.patch, cfg.blend)
    central = (Stat.STD, Stat.Q05, Stat.Q95)
    keep = ctx.measured_genes
    spot_of_bin, measured, per_spot = _spot_index(ctx, tissue)
    totals = np.zeros((len(per_spot), int(keep.sum())), dtype=np.float64)
    mine = [idx[env.rank :: env.world_size] for idx in per_block]
    total_runs = sum(len(m) for m in mine)
    _log.info(
        "streamed: %d blocks of up to %d bins, %d tiles of %d bins (stride %d), %d tile runs "
        "on this rank",
        len(blocks), blocks[0][2] - blocks[0][0] if blocks else 0, len(origins), ctx.patch,
        stride, total_runs,
    )  # fmt: skip
    rows_all, cols_all = [], []
    n_obs = int(tissue.sum())
    subset = None
    if cfg.uncertainty_genes is not None:
        subset = np.asarray([genes.index(g) for g in cfg.uncertainty_genes], dtype=np.int64)
    out = _Datasets(tmp_path, n_obs, ctx.n_genes, subset) if env.is_main else None
    done, start = 0, 0
    if on_progress is not None:
        on_progress(done, total_runs)
    try:
        width = bundle.model.cfg.base_channels
        batch_size = tile_batch_size(cfg, width, ctx.n_genes, ctx.patch, env.device)
        side = (max(b[2] - b[0] for b in blocks), max(b[3] - b[1] for b in blocks))
        acc = TileAccumulator((N_STATS, ctx.n_genes), side, window, central=central)
        for block, index in zip(blocks, mine, strict=True):
            r0, c0, r1, c1 = block
            acc.reset((r0, c0), (r1 - r0, c1 - c0))  # one set of buffers for every block
            for batch in iter_batches(len(index), batch_size):
                at = index[batch]
                stats, _ = sample_tiles(bundle, ctx, origins[at], at, cfg, ctx.norm, env.device)
                for k, tile in enumerate(stats):
                    acc.add(origins[at[k]], tile, int(at[k]))
                done += len(at)
                if on_progress is not None:
                    on_progress(done, total_runs)
            if env.distributed:
                reduce_to_rank0(acc, env)
            if out is None:
                continue
            rr, cc = np.nonzero(tissue[r0:r1, c0:c1])
            if not acc.covered()[rr, cc].all():
                raise RuntimeError(f"streamed predict: block {block} has tissue bins no tile ran")
            stats = acc.result(in_place=True)  # [5, G, h, w], the accumulator's own buffer
            out.write(start, stats, rr, cc)
            start += len(rr)
            rows_all.append(rr + r0)
            cols_all.append(cc + c0)
            spots = spot_of_bin[rr + r0, cc + c0]
            has = spots >= 0
            if has.any():
                ids, local = np.unique(spots[has], return_inverse=True)
                member = sp.csr_matrix(
                    (np.ones(len(local)), (local, np.arange(len(local)))),
                    shape=(len(ids), len(local)),
                )
                mean = stats[Stat.MEAN][:, rr[has], cc[has]][keep].astype(np.float64)
                totals[ids] += member @ mean.T
            del stats
        if out is None:
            return None
        names = [g for g, k in zip(genes, keep, strict=True) if k]
        report = _consistency(totals, measured, keep, names, per_spot)
        report["projected"] = bool(cfg.project_to_spots)
        rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
        cols = np.concatenate(cols_all) if cols_all else np.zeros(0, np.int64)
        counts, std = _finish_values(
            out, spot_of_bin[rows, cols], totals, measured, per_spot, keep, cfg.project_to_spots,
        )  # fmt: skip
    finally:
        if out is not None:
            out.file.close()
    return StreamedResult(
        tmp_path, rows.astype(np.int64), cols.astype(np.int64), len(origins),
        sum(len(i) for i in per_block), blocks, stride, report, counts, std,
    )  # fmt: skip


def _finish_values(
    out: _Datasets, spot: np.ndarray, totals: np.ndarray, measured: np.ndarray,
    per_spot: np.ndarray, keep: np.ndarray, project: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One pass over the written rows: project them onto the spots (when asked) and sum ``X``
    and ``std`` per gene. Returns ``(Σ X [G], mean std [G])`` (NaN for genes without std).

    ``totals [n, G_measured]`` are the spots' predicted totals of the measured genes,
    ``measured [n, G]`` their counts; each chunk of rows computes the scale and shift of the
    spots it holds only (the arithmetic of :func:`~diffst.inference.spots.spot_projection`),
    so no ``[n, G]`` array beyond these two is made.
    """
    from diffst.inference.uncertainty import Stat

    n_obs, n_genes = out.file["X"].shape
    kept_column = np.cumsum(keep) - 1  # gene → its column in the measured genes' arrays
    measured_genes = np.flatnonzero(keep)
    step = max(1, _ROWS_PER_PASS // max(n_genes, 1))
    counts = np.zeros(n_genes, dtype=np.float64)
    std_sum = np.full(n_genes, np.nan)
    for name, stat in out.stats.items():
        if stat == Stat.STD:
            std_sum[out.columns[name]] = 0.0
    for a in range(0, n_obs, step):
        b = min(a + step, n_obs)
        s = spot[a:b]
        rows = np.flatnonzero(s >= 0)
        if project and len(rows):
            ids, which = np.unique(s[rows], return_inverse=True)
            total = totals[ids]
            target = measured[np.ix_(ids, measured_genes)]
            has_total = total > 0
            scale = np.where(has_total, target / np.where(has_total, total, 1.0), 1.0)
            shift = np.where(has_total, 0.0, target / np.maximum(per_spot[ids], 1)[:, None])
        for name, stat in out.stats.items():
            genes = out.columns[name]
            local = np.flatnonzero(keep[genes])  # the dataset's columns of measured genes
            values = np.asarray(out.file[name][a:b])
            if project and len(rows) and len(local):
                cells = np.ix_(rows, local)
                part = values[cells].astype(np.float64)
                at = np.ix_(which, kept_column[genes[local]])
                part = part * scale[at] if stat == Stat.STD else part * scale[at] + shift[at]
                values[cells] = part.astype(np.float32)
                out.file[name][a:b] = values
            if stat == Stat.MEAN:
                counts[genes] += values.sum(axis=0, dtype=np.float64)
            elif stat == Stat.STD:
                std_sum[genes] += values.sum(axis=0, dtype=np.float64)
    return counts, std_sum / max(n_obs, 1)


def _consistency(
    totals: np.ndarray, measured: np.ndarray, keep: np.ndarray, names: list[str],
    per_spot: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """:func:`~diffst.inference.spots.spot_consistency` of the measured genes, taken in chunks
    of genes so that no further ``[n, G]`` copy of the spot arrays is made."""
    from diffst.inference.spots import spot_consistency

    columns = np.flatnonzero(keep)
    step = 64
    pcc: dict[str, float] = {}
    predicted_sum, measured_sum = 0.0, 0.0
    part: dict[str, Any] = {}
    used = per_spot > 0
    for g in range(0, len(columns), step):
        cols = slice(g, g + step)
        m = measured[:, columns[cols]]
        part = spot_consistency(totals[:, cols], m, names[cols], per_spot)
        pcc.update(dict(part["pcc"]))  # type: ignore[call-overload]
        predicted_sum += float(totals[used, cols].sum())
        measured_sum += float(m[used].sum())
    finite = np.array([v for v in pcc.values() if np.isfinite(v)])
    return {
        "pcc": pcc,
        "mean_pcc": float(finite.mean()) if finite.size else float("nan"),
        "median_pcc": float(np.median(finite)) if finite.size else float("nan"),
        "n_spots": int(part.get("n_spots", int(used.sum()))),
        "n_spots_empty": int(part.get("n_spots_empty", int((~used).sum()))),
        "total_ratio": predicted_sum / measured_sum if measured_sum > 0 else float("nan"),
    }


def finish_h5ad(result: StreamedResult, frame: anndata.AnnData, out: Path) -> anndata.AnnData:
    """Write ``frame``'s ``obs``, ``var``, ``obsm`` and ``uns`` (:func:`~diffst.inference.
    to_anndata.anndata_frame`, in the order of ``result``) beside the values in
    ``result.tmp_path`` and move the file to ``out``. Returns ``frame`` (no ``X``): read genes
    with :func:`~diffst.inference.to_anndata.read_prediction`."""
    import h5py
    from anndata.io import write_elem

    if frame.n_obs != len(result.rows):
        raise ValueError(f"annotations for {frame.n_obs} bins, values for {len(result.rows)}")
    with h5py.File(result.tmp_path, "a") as f:
        if "uncertainty" in f:  # a chosen subset of genes: obsm DataFrames, no layers
            import pandas as pd

            genes = list(frame.uns["diffst"]["uncertainty"]["genes"])
            for key, ds in f["uncertainty"].items():
                frame.obsm[key] = pd.DataFrame(np.asarray(ds), index=frame.obs_names, columns=genes)
            del f["uncertainty"]
        write_elem(f, "obs", frame.obs)
        write_elem(f, "var", frame.var)
        write_elem(f, "obsm", dict(frame.obsm))
        write_elem(f, "uns", dict(frame.uns))
        for key in ("varm", "obsp", "varp"):
            write_elem(f, key, {})
        for name in ("X", *(f"layers/{k}" for k in f["layers"])):
            f[name].attrs["encoding-type"] = "array"
            f[name].attrs["encoding-version"] = "0.2.0"
        f["layers"].attrs["encoding-type"] = "dict"
        f["layers"].attrs["encoding-version"] = "0.1.0"
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    os.replace(result.tmp_path, out)
    return frame


def check_streamable(cfg: PredictConfig, cells: bool = False) -> None:
    """Options a streamed prediction cannot honour (raised before any compute)."""
    if cfg.write_spatialdata:
        raise ConfigError(
            "predict.write_spatialdata: a streamed prediction (predict.stream) is written to the "
            "h5ad block by block; convert the h5ad afterwards, or predict with --stream off"
        )
    if cells:
        raise ConfigError(
            "predict --cells needs the whole prediction in memory, and this one is streamed "
            "(predict.stream; the whole-section statistics exceed predict.block_gib): predict a "
            "--region at a time with --cells, or raise --block-gib"
        )
