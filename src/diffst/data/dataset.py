"""Patch store → tensors: :class:`PatchDataset`, :class:`StoreInfo`, :func:`load_manifest`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffst.config import ConfigError
from diffst.data.transforms import (
    Augment,
    NormStats,
    apply_augment,
    crop_unit,
    draw_augment,
    normalise,
)
from diffst.io.sample import InputError
from diffst.keys import BatchKey, StoreFile

__all__ = ["PatchDataset", "StoreInfo", "load_manifest"]

_SPLITS = ("train", "val", "test")
_ARRAYS = {
    "hr": StoreFile.HR,
    "lr": StoreFile.LR,
    "mask": StoreFile.MASK,
    "lr_mask": StoreFile.LR_MASK,
    "tissue": StoreFile.TISSUE,
    "cells": StoreFile.CELLS,
    "cell_score": StoreFile.CELL_SCORE,
}


def load_manifest(store: str | Path) -> dict[str, Any]:
    """Read ``store/manifest.json``; :class:`InputError` names the file when it is absent/bad."""
    path = Path(store) / StoreFile.MANIFEST.value
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not a diffst store (manifest.json missing)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: manifest is not valid JSON ({err})") from None


#: View sizes of a store manifest's ``views`` (which may also name ``stain``, a string).
_VIEW_SIZES = ("tissue_px", "cell_grid", "tile_px")


@dataclass(frozen=True)
class StoreInfo:
    """What training and prediction need to know about a store."""

    path: Path
    genes: tuple[str, ...]
    geometry: dict[str, Any]  # GridGeometry.to_dict() + patch, stride, lr_size, lr_mode, lr_bins
    channels: tuple[str, ...]  # image channels of the views
    views: dict[str, int]  # tissue_px, cell_grid, tile_px (the manifest's view sizes)
    normalisation: NormStats
    coexpr: dict[str, Any]  # s [G] totals, pearson [G][G] (train split only)
    n_patches: dict[str, int]  # per split

    @property
    def patch(self) -> int:
        """P: patch side in HR bins."""
        return int(self.geometry["patch"])

    @property
    def lr_size(self) -> int:
        """p: LR cells per patch side."""
        return int(self.geometry["lr_size"])

    @property
    def factor(self) -> int:
        """HR bins per LR cell side."""
        return int(self.geometry["factor"])

    @classmethod
    def load(cls, store: str | Path) -> StoreInfo:
        """Read the store's manifest."""
        m = load_manifest(store)
        return cls(
            path=Path(store),
            genes=tuple(m["genes"]),
            geometry=dict(m["geometry"]),
            channels=tuple(m["image"]["channels"]),
            views={k: int(m["views"][k]) for k in _VIEW_SIZES},
            normalisation=NormStats.from_dict(m["normalisation"]),
            coexpr=m["coexpr"],
            n_patches={k: int(v["n_patches"]) for k, v in m["splits"].items()},
        )


class PatchDataset(torch.utils.data.Dataset):
    """Patches of one split as ``dict[BatchKey, Tensor]`` (shapes in :class:`BatchKey`).

    Parameters
    ----------
    store_dir
        Prepared store.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    augment
        Random symmetries (and crops) applied identically to every modality.
    seed
        Augmentation seed; item ``i`` at epoch ``e`` uses the generator seeded with
        ``(seed, e, i)``, so training resumes exactly. Call :meth:`set_epoch` each epoch.
    crop
        Crop side in HR bins (``None``: whole patches); must be a multiple of
        :func:`~diffst.data.transforms.crop_unit`. Random with ``augment``, else centred.
    normalisation
        ``"log1p_gene"``, ``"minmax_patch"`` or ``"none"``; default: the store's.
    """

    def __init__(
        self,
        store_dir: str | Path,
        split: str,
        *,
        augment: bool = False,
        seed: int = 0,
        crop: int | None = None,
        normalisation: str | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}")
        self.info = StoreInfo.load(store_dir)
        self.norm = self.info.normalisation
        if normalisation is not None:
            if normalisation not in ("log1p_gene", "minmax_patch", "none"):
                raise ConfigError(f"unknown normalisation {normalisation!r}")
            self.norm = dataclasses.replace(self.norm, kind=normalisation)
        self.split = split
        self.augment = augment
        self.seed = seed
        self.crop = crop
        self.epoch = 0
        folder = Path(store_dir) / split
        self._folder = folder
        self._arrays = self._open()
        self._unit = self._check_crop(crop)

    def _check_crop(self, crop: int | None) -> int:
        v = self.info.views
        unit = crop_unit(self.info.patch, self.info.factor, v["tissue_px"], v["cell_grid"])
        if crop is not None and (crop % unit or not 0 < crop <= self.info.patch):
            raise ConfigError(
                f"crop must be a multiple of {unit} HR bins and ≤ patch {self.info.patch}, "
                f"got {crop}"
            )
        return unit

    def _open(self) -> dict[str, np.ndarray]:
        return {k: np.load(self._folder / f.value, mmap_mode="r") for k, f in _ARRAYS.items()}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the memory maps (DataLoader workers re-open the files)."""
        state = self.__dict__.copy()
        state.pop("_arrays")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._arrays = self._open()

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._arrays["hr"].shape[0])

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """Un-normalised, un-augmented arrays of patch ``index``."""
        return {k: np.array(a[index]) for k, a in self._arrays.items()}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        arrays = self.raw(index)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            aug = draw_augment(rng, self.info.patch, self.info.factor, self.crop, self._unit)
            arrays = apply_augment(arrays, aug, self.info.patch)
        elif self.crop is not None:  # evaluation: the centred crop
            start = (self.info.patch - self.crop) // 2 // self._unit * self._unit
            arrays = apply_augment(
                arrays, Augment(crop_row=start, crop_col=start, crop=self.crop), self.info.patch
            )
        hr, lr, scale = normalise(arrays["hr"], arrays["lr"], self.norm)
        f32 = torch.float32
        return {
            BatchKey.HR: torch.from_numpy(hr),
            BatchKey.LR: torch.from_numpy(lr),
            BatchKey.HR_COUNTS: torch.from_numpy(arrays["hr"].astype(np.float32)),
            BatchKey.LR_COUNTS: torch.from_numpy(arrays["lr"].astype(np.float32)),
            BatchKey.TISSUE: torch.from_numpy(arrays["tissue"]).to(f32) / 255.0,
            BatchKey.CELLS: torch.from_numpy(arrays["cells"]).to(f32) / 255.0,
            BatchKey.CELL_SCORE: torch.from_numpy(arrays["cell_score"].astype(np.float32)),
            BatchKey.MASK: torch.from_numpy(arrays["mask"][None].astype(np.float32)),
            BatchKey.LR_MASK: torch.from_numpy(arrays["lr_mask"][None].astype(np.float32)),
            BatchKey.NORM_SCALE: torch.from_numpy(scale),
            BatchKey.INDEX: torch.tensor(int(index), dtype=torch.int64),
        }
