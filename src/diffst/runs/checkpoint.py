"""Checkpoints as inference reads them: validated load, store metadata, the network rebuilt.

A checkpoint is a ``torch.save`` mapping readable with ``weights_only=True``:

``format``/``version``, ``model`` and ``ema`` weights, ``optimizer``, ``step``, ``epoch`` and
``epoch_step`` (data-order position), ``rng`` (torch, numpy, python, CUDA), ``config`` (the
resolved :class:`~diffst.runs.config.RunConfig` as a mapping) and ``store_meta`` (genes, grid
geometry, views, normalisation, adjacency ``[G, G]``, image channels, HR/LR patch sides, manifest
sha256) so that prediction needs nothing but the checkpoint. Writing and resuming checkpoints is
training's business (:mod:`diffst.training.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diffst.io.sample import InputError

if TYPE_CHECKING:
    from diffst.models import DiffSTModel
    from diffst.runs.config import RunConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST",
    "InferenceBundle",
    "build_model",
    "gene_neighbours",
    "load_checkpoint",
    "load_for_inference",
    "read_store_meta",
]


CHECKPOINT_FORMAT = "diffst-checkpoint"


CHECKPOINT_VERSION = 1


LAST = "last.pt"


_REQUIRED = ("model", "ema", "step", "config", "store_meta")


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, with a clear :class:`InputError` if it is missing, truncated or foreign.

    A folder is accepted and resolves to ``<folder>/last.pt`` (or ``<folder>/checkpoints/last.pt``).
    """
    path = Path(path)
    if path.is_dir():
        nested = path / "checkpoints" / LAST
        path = nested if nested.is_file() else path / LAST
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, …
        raise InputError(
            f"{path}: checkpoint is corrupted or truncated and cannot be read ({err}); "
            "use an earlier step_XXXXXXX.pt from the same folder"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: field 'format': not a diffst checkpoint")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise InputError(f"{path}: checkpoint lacks field(s) {missing}")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: field 'version': checkpoint version {state['version']} is newer than "
            f"this diffst supports ({CHECKPOINT_VERSION})"
        )
    state["path"] = str(path)
    return state


def read_store_meta(
    store_dir: str | os.PathLike[str], adjacency_kind: str, split: str, graph_topk: int = 8
) -> dict:
    """Store facts a checkpoint must carry, read from ``manifest.json`` and the split's arrays.

    Parameters
    ----------
    store_dir
        Patch store written by ``diffst prepare``.
    adjacency_kind
        ``model.adjacency_kind``; the adjacency ``[G, G]`` is built from the manifest's
        ``coexpr`` (training split only), with ``graph_topk`` neighbours for ``pearson_topk``.
    split
        Split whose arrays give the patch sizes (the training split).

    Returns
    -------
    dict
        ``genes``, ``geometry``, ``views``, ``channels`` (image channel names), ``image``
        (the training image's µm/px, transform, channels and intensity range),
        ``normalisation``, ``adjacency`` (tensor ``[G, G]``), ``image_channels`` (C),
        ``hr_size`` (P, HR bins), ``lr_size`` (p, LR cells),
        ``tissue_size`` (S, px), ``cell_grid`` (n), ``cell_tile_size`` (t, px),
        ``manifest_sha256``, ``store_path`` (absolute), and for ``--hr spots`` stores ``spots``
        (pooling factor, low-count threshold, lattice); ``gene_neighbours``
        (:func:`gene_neighbours`).
    """
    from diffst.keys import StoreFile
    from diffst.models.adjacency import coexpression_adjacency

    store = Path(store_dir)
    path = store / StoreFile.MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: store manifest not found (run `diffst prepare` first)")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    for key in ("genes", "geometry", "normalisation", "coexpr"):
        if key not in manifest:
            raise InputError(f"{path}: field '{key}' is missing")
    coexpr = manifest["coexpr"]
    adjacency = coexpression_adjacency(
        totals=coexpr.get("s"), pearson=coexpr.get("pearson"), kind=adjacency_kind,
        topk=graph_topk,
    )  # fmt: skip
    files = {"hr": StoreFile.HR, "lr": StoreFile.LR, "cells": StoreFile.CELLS,
             "tissue": StoreFile.TISSUE}  # fmt: skip
    shapes = {key: _array_shape(store / split / name) for key, name in files.items()}
    n_cells = shapes["cells"][1]
    return {
        "genes": [str(g) for g in manifest["genes"]],
        "geometry": manifest["geometry"],
        "views": manifest.get("views", {}),
        "channels": list(manifest.get("image", {}).get("channels", [])),
        "image": manifest.get("image", {}),
        "normalisation": manifest["normalisation"],
        "adjacency": adjacency,
        "adjacency_kind": adjacency_kind,
        "image_channels": int(shapes["tissue"][1]),
        "hr_size": int(shapes["hr"][-1]),
        "lr_size": int(shapes["lr"][-1]),
        "tissue_size": int(shapes["tissue"][-1]),
        "cell_grid": math.isqrt(n_cells),
        "cell_tile_size": int(shapes["cells"][-1]),
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "store_path": str(store.resolve()),
        "gene_neighbours": gene_neighbours(coexpr.get("pearson")),
        **_spot_array_entry(manifest),
    }


def gene_neighbours(pearson: Any, k: int = 8) -> dict[str, list[list[Any]]] | None:
    """Each gene's ``k`` most positively correlated other genes over the training bins.

    ``{"index": [G][≤k] gene indices, "pearson": [G][≤k] r}`` (``r > 0`` only, strongest
    first), or ``None`` without a Pearson matrix. Prediction imputes the LR input of checkpoint
    genes a section lacks from these neighbours (:func:`diffst.inference.setup.imputation_weights`).
    """
    if pearson is None:
        return None
    r = np.asarray(pearson, dtype=np.float64)
    r = np.where(np.isfinite(r), r, 0.0)
    np.fill_diagonal(r, -np.inf)
    order = np.argsort(-r, axis=1)[:, :k]
    index: list[list[Any]] = []
    values: list[list[Any]] = []
    for g, row in enumerate(order):
        keep = [int(j) for j in row if r[g, j] > 0]
        index.append(keep)
        values.append([float(r[g, j]) for j in keep])
    return {"index": index, "pearson": values}


def _spot_array_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """``spots`` (pooling factor, low-count threshold, lattice) of ``--hr spots`` stores: what
    prediction below the pitch rebuilds a section's spot grid with."""
    spots = manifest.get("spots")
    if not isinstance(spots, dict):
        return {}
    sections = spots.get("sections") or [{}]
    return {
        "spots": {
            "factor": int(spots["factor"]),
            "min_spot_counts": int(spots.get("min_spot_counts", 1)),
            "lattice": sections[0].get("lattice"),
        }
    }


def _array_shape(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise InputError(f"{path}: store array not found (is the split empty or missing?)")
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: cannot read the array header ({err})") from None


@dataclass
class InferenceBundle:
    """Everything ``predict`` needs, from one checkpoint."""

    model: torch.nn.Module  # DiffSTModel with EMA weights, eval mode, on the requested device
    schedule: Any  # diffst.diffusion.NoiseSchedule
    config: Any  # diffst.runs.config.RunConfig
    store_meta: dict[str, Any]  # genes, geometry, views, normalisation, adjacency, sizes, sha256
    step: int  # optimiser steps the weights were trained for
    path: Path  # checkpoint file read


def load_for_inference(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> InferenceBundle:
    """Rebuild the model with EMA weights in eval mode, and the noise schedule, from a checkpoint.

    Parameters
    ----------
    path
        ``.pt`` file or a run/checkpoints folder (its ``last.pt`` is used).
    device
        Torch device for the model.
    """
    from diffst.diffusion import NoiseSchedule
    from diffst.runs.config import run_config_from_dict

    state = load_checkpoint(path)
    config = run_config_from_dict(state["config"])
    meta = state["store_meta"]
    model = build_model(config, meta)
    model.load_state_dict(state["ema"]["weights"])
    model.to(device).eval()
    schedule = NoiseSchedule.from_config(config.diffusion)
    return InferenceBundle(
        model=model,
        schedule=schedule,
        config=config,
        store_meta=meta,
        step=int(state["step"]),
        path=Path(state["path"]),
    )


def build_model(config: RunConfig, store_meta: dict[str, Any]) -> DiffSTModel:
    """Instantiate :class:`DiffSTModel` with sizes and adjacency from the store metadata."""
    from diffst.models import DiffSTModel

    adjacency = store_meta.get("adjacency")
    return DiffSTModel(
        config.model,
        n_genes=len(store_meta["genes"]),
        image_channels=int(store_meta["image_channels"]),
        lr_size=int(store_meta["lr_size"]),
        hr_size=int(store_meta["hr_size"]),
        adjacency=None if adjacency is None else torch.as_tensor(adjacency, dtype=torch.float32),
    )
