"""Patch-store writing: everything goes to a hidden temporary folder that is renamed into
place only when complete, so a failure never leaves a partial store (see docs/store_format.md).

The hidden folders carry the writer's process id (``.<store>.tmp-<pid>-<hex>`` while writing,
``.<store>.old-<pid>-<hex>`` for the replaced store during the final swap). A killed writer's
leftovers are cleaned by the next write to the same store (:func:`recover_leftovers`): its
temporary folder is deleted, and a replaced store that was moved aside but not yet deleted is
put back when nothing took its place (else deleted)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError, process_alive, remove_stale_temporaries, sha256_file
from diffst.keys import StoreFile

if TYPE_CHECKING:
    from diffst.io.sample import SpatialSample
    from diffst.preparation.plan import PatchPlan
    from diffst.sections.config import PrepareConfig
    from diffst.sections.inputs import SectionInputs

__all__ = [
    "FORMAT_VERSION",
    "StoreWriter",
    "check_target",
    "recover_leftovers",
    "write_patches",
]

FORMAT_VERSION = 1


class StoreWriter:
    """Write a store into ``out_dir`` atomically.

    Use as a context manager: arrays are allocated with :meth:`allocate` (memory-mapped
    ``.npy`` files), small files written with :meth:`write_text` / :meth:`write_json`, and
    :meth:`commit` moves the finished folder into place. Leaving the block without
    :meth:`commit` (e.g. on an exception) deletes the temporary folder.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        check_target(self.out_dir, overwrite)
        self.tmp = self.out_dir.parent / _hidden(self.out_dir, "tmp")
        self._maps: list[np.memmap] = []
        self._committed = False

    def __enter__(self) -> StoreWriter:
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self._maps.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts: str) -> Path:
        """Path inside the temporary store."""
        return self.tmp.joinpath(*parts)

    def allocate(
        self, split: str, file: StoreFile, shape: tuple[int, ...], dtype: Any
    ) -> np.ndarray:
        """A writable memory-mapped ``<split>/<file>`` array of ``shape`` and ``dtype``."""
        target = self.path(split, file.value)
        target.parent.mkdir(exist_ok=True)
        arr = np.lib.format.open_memmap(target, mode="w+", dtype=dtype, shape=shape)
        self._maps.append(arr)
        return arr

    def write_text(self, file: StoreFile, text: str) -> None:
        """Write a small text file at the store root."""
        self.path(file.value).write_text(text, encoding="utf-8")

    def write_json(self, file: StoreFile, data: dict[str, Any]) -> None:
        """Write a JSON file at the store root (UTF-8, indented)."""
        self.write_text(file, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    def commit(self) -> Path:
        """Flush every array and move the store into place; returns its path."""
        for arr in self._maps:
            arr.flush()
        self._maps.clear()
        old = None
        if self.out_dir.exists():
            check_target(self.out_dir, self.overwrite)
            old = self.out_dir.parent / _hidden(self.out_dir, "old")
            os.replace(self.out_dir, old)
        os.replace(self.tmp, self.out_dir)
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def _hidden(out_dir: Path, kind: str) -> str:
    return f".{out_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _leftover_pattern(out_dir: Path, kind: str) -> str:
    # current names carry the pid; names of earlier versions only 8 hex digits
    name = re.escape(out_dir.name)
    return rf"\.{name}\.{kind}-(?:(?P<pid>\d+)-)?[0-9a-f]{{8}}"


def recover_leftovers(out_dir: Path) -> list[Path]:
    """Clean what killed writers of ``out_dir`` left beside it; return the paths cleaned.

    Temporary folders of dead writers are deleted. A replaced store moved aside by a writer
    that died during the final swap is moved back when ``out_dir`` is missing, else deleted.
    Folders of writers still running are left alone.
    """
    parent = out_dir.parent
    if not parent.is_dir():
        return []
    cleaned = remove_stale_temporaries(parent, _leftover_pattern(out_dir, "tmp"))
    regex = re.compile(_leftover_pattern(out_dir, "old"))
    for entry in sorted(parent.iterdir()):
        match = regex.fullmatch(entry.name)
        if match is None or (match["pid"] and process_alive(int(match["pid"]))):
            continue
        if not out_dir.exists() and (entry / StoreFile.MANIFEST.value).is_file():
            os.replace(entry, out_dir)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        cleaned.append(entry)
    return cleaned


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an earlier store, and that only with ``overwrite``.

    Leftovers of killed writers are cleaned first (:func:`recover_leftovers`).
    """
    recover_leftovers(out_dir)
    if not out_dir.exists():
        return
    if not overwrite:
        raise ConfigError(f"{out_dir}: output folder exists; pass --overwrite to replace it")
    if not (out_dir / StoreFile.MANIFEST.value).is_file():
        raise ConfigError(f"{out_dir}: exists and is not a diffst store; refusing to replace it")


#: Visium-mode spot files at the store root (section-wide)
SPOT_CENTRES = "spots_centres_um.npy"
SPOT_COUNTS = "spots_counts.npy"


def write_patches(
    writer: StoreWriter,
    sample: SpatialSample,
    section: SectionInputs,
    plan: PatchPlan,
    cfg: PrepareConfig,
) -> dict[str, Any]:
    """Cut every planned patch into ``<split>/*.npy`` and return the manifest's data part
    (sample, genes, geometry, image, views, splits, counts, sources)."""
    from diffst.sections.inputs import window_inputs
    from diffst.sections.tiling import SPLITS
    from diffst.sections.views import channel_indices, intensity_range, section_stain

    assert sample.image is not None
    chan = channel_indices(sample.image, cfg.views.channels)
    ranges = intensity_range(sample.image, chan, cfg.views.intensity_percentiles)
    stain = section_stain(sample.image, chan, ranges) if cfg.views.stain == "reinhard" else None
    for k, split in enumerate(SPLITS):
        sel = np.flatnonzero(plan.split == k)
        arrays = _allocate_split(writer, split, len(sel), len(section.genes), len(chan), cfg)
        for n, m in enumerate(sel):
            w = window_inputs(
                section, int(plan.rows[m]), int(plan.cols[m]), cfg.patch,
                image=sample.image, views=cfg.views, ranges=ranges, stain=stain,
            )  # fmt: skip
            arrays[StoreFile.HR][n] = w.hr
            arrays[StoreFile.LR][n] = w.lr
            arrays[StoreFile.LR_MASK][n] = w.lr_mask
            arrays[StoreFile.MASK][n] = w.tissue
            arrays[StoreFile.TISSUE][n] = w.tissue_view
            arrays[StoreFile.CELLS][n] = w.cells
            arrays[StoreFile.CELL_SCORE][n] = w.cell_score
            arrays[StoreFile.ORIGIN][n] = w.origin_um
    if section.spot_centres_um is not None and section.spot_counts is not None:
        np.save(writer.path(SPOT_CENTRES), section.spot_centres_um)
        np.save(writer.path(SPOT_COUNTS), section.spot_counts)
    data = _manifest_data(
        sample, section, plan, cfg, [sample.image.channels[i] for i in chan], ranges
    )
    return stain_manifest(data, cfg.views, stain)


def _allocate_split(
    writer: StoreWriter, split: str, n: int, g: int, c: int, cfg: PrepareConfig
) -> dict[StoreFile, np.ndarray]:
    p, s, nn, t = cfg.patch, cfg.views.tissue_px, cfg.views.cell_grid**2, cfg.views.tile_px
    q = cfg.lr_size
    spec: dict[StoreFile, tuple[tuple[int, ...], Any]] = {
        StoreFile.HR: ((n, g, p, p), np.int32),
        StoreFile.LR: ((n, g, q, q), np.float32),
        StoreFile.MASK: ((n, p, p), np.uint8),
        StoreFile.LR_MASK: ((n, q, q), np.uint8),
        StoreFile.TISSUE: ((n, c, s, s), np.uint8),
        StoreFile.CELLS: ((n, nn, c, t, t), np.uint8),
        StoreFile.CELL_SCORE: ((n, nn), np.float32),
        StoreFile.ORIGIN: ((n, 2), np.float64),
    }
    return {f: writer.allocate(split, f, shape, dt) for f, (shape, dt) in spec.items()}


def _manifest_data(
    sample: SpatialSample,
    section: SectionInputs,
    plan: PatchPlan,
    cfg: PrepareConfig,
    channels: list[str],
    ranges: np.ndarray,
) -> dict[str, Any]:
    assert sample.image is not None and section.stats is not None
    stats = section.stats
    image = sample.image
    return {
        "format_version": FORMAT_VERSION,
        "sample": {"name": sample.name, "platform": sample.platform},
        "genes": list(section.genes),
        "geometry": _geometry_meta(section, cfg),
        "image": {
            "um_per_px": image.um_per_px,
            "um_to_px": image.um_to_px.to_list(),
            "shape_hw": list(image.shape_hw),
            "kind": image.kind,
            "channels": channels,
            "intensity_range": ranges.tolist(),
        },
        "views": {
            "tissue_px": cfg.views.tissue_px,
            "cell_grid": cfg.views.cell_grid,
            "tile_px": cfg.views.tile_px,
        },
        **_split_meta(plan, cfg),
        "tissue_fraction": float(section.tissue.mean()),
        "counts": dataclasses.asdict(stats),
        "sources": {
            key: {"path": str(path), "sha256": sha256_file(Path(path))}
            for key, path in sample.source_files.items()
        },
    }


def _geometry_meta(section: SectionInputs, cfg: PrepareConfig) -> dict[str, Any]:
    geometry = section.geometry.to_dict()
    geometry.update(
        patch=cfg.patch,
        stride=cfg.stride,
        lr_size=cfg.lr_size,
        lr_mode=section.lr_layout,
        lr_bins=section.lr_bins,
        spot_diameter_um=section.spot_diameter_um,
        spot_pitch_um=section.spot_pitch_um,
        shape_lr=list(section.geometry.shape_lr),
    )
    return geometry


def _split_meta(plan: PatchPlan, cfg: PrepareConfig) -> dict[str, Any]:
    from diffst.sections.tiling import SPLITS

    splits = {
        name: {
            "n_patches": plan.count(name),
            "tissue_fraction_mean": float(plan.tissue_fraction[plan.split == k].mean())
            if plan.count(name)
            else 0.0,
        }
        for k, name in enumerate(SPLITS)
    }
    return {
        "splits": splits,
        "split_blocks": {
            "block_um": cfg.split.block_um,
            "layout": cfg.split.layout,
            "row_edges": plan.row_edges.tolist(),
            "col_edges": plan.col_edges.tolist(),
            "fractions": list(cfg.split.fractions),
            "seed": cfg.split.seed,
            "blocks": plan.blocks.tolist(),
        },
        "patches": {"candidates": plan.n_candidates, "low_tissue": plan.n_low_tissue},
    }


def stain_manifest(data: dict[str, Any], views: Any, stain: Any) -> dict[str, Any]:
    """Record the views' colour normalisation in a manifest (``views.stain``, and the reference
    statistics under ``image.stain``); stores without it keep their earlier manifest."""
    if stain is not None:
        data["views"]["stain"] = views.stain
        data["image"]["stain"] = {"method": stain.method, "reference": stain.reference.to_dict()}
    return data
