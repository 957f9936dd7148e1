"""Names shared across stages: batch-dict keys, store files, AnnData slots.

A training/evaluation batch is a ``dict[str, torch.Tensor]`` with these keys
(``B`` batch, ``G`` genes, ``H×W`` HR bins, ``h×w`` LR grid, ``C`` image channels,
``N`` cell tiles, ``t`` tile side in px, ``S×S`` tissue-view side in px):
"""

from __future__ import annotations

from enum import StrEnum


class BatchKey(StrEnum):
    """Keys of the batch dictionary produced by :mod:`diffst.data.dataset`."""

    HR = "hr"
    """``[B, G, H, W]`` float32, normalised HR expression (the diffusion target)."""
    LR = "lr"
    """``[B, G, h, w]`` float32, normalised LR expression (conditioning)."""
    HR_COUNTS = "hr_counts"
    """``[B, G, H, W]`` float32, raw HR counts (for evaluation on the count scale)."""
    LR_COUNTS = "lr_counts"
    """``[B, G, h, w]`` float32, raw LR counts."""
    TISSUE = "tissue"
    """``[B, C, S, S]`` float32 in [0, 1], tissue-level view of the whole patch."""
    CELLS = "cells"
    """``[B, N, C, t, t]`` float32 in [0, 1], cell-level tiles, row-major over the tile grid."""
    CELL_SCORE = "cell_score"
    """``[B, N]`` float32, information content (Shannon entropy, bits) of each cell tile."""
    MASK = "mask"
    """``[B, 1, H, W]`` float32 in {0, 1}, HR bins inside tissue and measured."""
    LR_MASK = "lr_mask"
    """``[B, 1, h, w]`` float32 in {0, 1}, LR cells that hold a measurement."""
    NORM_SCALE = "norm_scale"
    """``[B, G]`` float32, per-patch per-gene scale used by the normalisation (for inversion)."""
    INDEX = "index"
    """``[B]`` int64, patch index in its split."""


class StoreFile(StrEnum):
    """Files of a prepared patch store (see ``docs/store_format.md``)."""

    MANIFEST = "manifest.json"
    HR = "hr.npy"
    LR = "lr.npy"
    TISSUE = "tissue.npy"
    CELLS = "cells.npy"
    CELL_SCORE = "cell_score.npy"
    MASK = "mask.npy"
    LR_MASK = "lr_mask.npy"
    ORIGIN = "origin_um.npy"
    SUMMARY = "summary.md"
    ALIGNMENT_FIGURE = "alignment.png"
    RESOLVED_CONFIG = "config.yaml"


class AnnDataKey(StrEnum):
    """AnnData slots written by ``diffst predict``."""

    SPATIAL = "spatial"
    """``obsm['spatial']``: bin centres in full-resolution image pixels ``(col, row)``."""
    STD = "std"
    Q05 = "q05"
    Q95 = "q95"
    SAMPLE_MEAN = "sample_mean"
    """``layers['sample_mean']``: mean of the K samples (``X`` is the point estimate)."""
    UNS = "diffst"
    """``uns['diffst']``: config, checkpoint checksum, sampler, steps, seed."""
