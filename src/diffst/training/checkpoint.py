"""Checkpoints as training writes and resumes them: atomic save, resume checks, RNG state.

The format, loading and the network rebuilt for inference are in :mod:`diffst.runs.checkpoint`.
Files are written to a hidden temporary file in the same folder, flushed, fsync'ed and moved
into place with ``os.replace``; ``last.pt`` is therefore always a complete file, also after
``kill -9`` during a write.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diffst.io.sample import InputError
from diffst.runs.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LAST, load_checkpoint

if TYPE_CHECKING:
    from diffst.runs.config import RunConfig

__all__ = [
    "capture_rng_state",
    "check_resumable",
    "restore_rng_state",
    "resume_checkpoint_path",
    "save_checkpoint",
    "saved_run_config",
    "store_differences",
    "training_run_config",
    "training_state",
    "write_run_checkpoint",
]

#: store-metadata fields that must agree between a checkpoint and the store it resumes on
COMPARED_META = (
    "genes", "geometry", "views", "channels", "image_channels", "hr_size", "lr_size"
)  # fmt: skip
#: geometry fields that describe one section rather than the patch layout (not compared)
_SECTION_GEOMETRY = ("origin_um", "shape_hr", "shape_lr", "stride")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _publish_last(step_path: Path) -> Path:
    """Make ``last.pt`` point at ``step_path``'s content atomically (hard link, else copy)."""
    last = step_path.with_name(LAST)
    tmp = step_path.with_name(f".{LAST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(step_path, tmp)
    except OSError:
        import shutil

        shutil.copyfile(step_path, tmp)
    os.replace(tmp, last)
    _fsync_dir(last.parent)
    return last


def write_run_checkpoint(
    state: dict[str, Any], ckpt_dir: str | os.PathLike[str], keep_last: int
) -> Path:
    """Save ``ckpt_dir/step_XXXXXXX.pt``, publish it as ``last.pt``, keep the newest ``keep_last``.

    Stale temporary files of an interrupted earlier write are removed first.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    step_path = save_checkpoint(state, ckpt_dir / f"step_{int(state['step']):07d}.pt")
    last = _publish_last(step_path)
    kept = sorted(ckpt_dir.glob("step_*.pt"))
    for old in kept[: max(0, len(kept) - max(1, keep_last))]:
        old.unlink(missing_ok=True)
    return last


def resume_checkpoint_path(
    resume: bool | str | os.PathLike[str], ckpt_dir: str | os.PathLike[str]
) -> Path | None:
    """The checkpoint ``resume`` names: ``True`` → ``ckpt_dir/last.pt``, a path → that path."""
    if resume is False or resume is None:
        return None
    path = Path(ckpt_dir) / LAST if resume is True else Path(resume)
    if resume is True and not path.is_file():
        raise InputError(f"{path}: --resume given but the run folder has no checkpoint")
    return path


def saved_run_config(
    out_dir: str | os.PathLike[str], resume: bool | str | os.PathLike[str] = True
) -> RunConfig:
    """The configuration a run was trained with, from the checkpoint it would resume from.

    Parameters
    ----------
    out_dir
        Run folder (``checkpoints/last.pt`` is read when ``resume`` is ``True``).
    resume
        ``True`` or the path of the checkpoint to resume.

    Returns
    -------
    RunConfig
        The checkpoint's resolved configuration (store view sizes included).
    """
    from diffst.runs.config import run_config_from_dict

    path = resume_checkpoint_path(resume, Path(out_dir) / "checkpoints")
    assert path is not None
    return run_config_from_dict(load_checkpoint(path)["config"])


def training_run_config(
    out_dir: str | os.PathLike[str],
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    resume: bool | str | os.PathLike[str] = False,
) -> RunConfig:
    """The configuration ``diffst train`` (and :func:`diffst.train`) runs with.

    A new run: ``preset`` (``small`` when ``None``), then ``config_file``, then ``overrides``.
    A resumed run: the checkpoint's own configuration (:func:`saved_run_config`) with a preset
    given explicitly, the file and the overrides applied on top.
    """
    from diffst.runs.config import resolve_run_config

    if resume:
        base = saved_run_config(out_dir, resume)
        return resolve_run_config(preset, config_file, list(overrides), base=base)
    return resolve_run_config(preset or "small", config_file, list(overrides))


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA), numpy and python, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), list(internal), gauss]


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached"]))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def store_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Human-readable differences between two store metadata mappings (empty when compatible)."""
    diffs: list[str] = []
    for key in COMPARED_META:
        a, b = expected.get(key), actual.get(key)
        if a == b:
            continue
        if key == "genes" and isinstance(a, list) and isinstance(b, list):
            only_a = [g for g in a if g not in b]
            only_b = [g for g in b if g not in a]
            if only_a or only_b:
                diffs.append(f"genes: only in checkpoint {only_a}; only in store {only_b}")
            else:
                diffs.append("genes: same genes in a different order")
        elif isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if key == "geometry" and sub in _SECTION_GEOMETRY:
                    continue
                if a.get(sub) != b.get(sub):
                    diffs.append(f"{key}.{sub}: checkpoint {a.get(sub)!r} vs store {b.get(sub)!r}")
        else:
            diffs.append(f"{key}: checkpoint {a!r} vs store {b!r}")
    return diffs


def check_resumable(state: dict[str, Any], config: Any, meta: dict[str, Any]) -> list[str]:
    """Refuse to resume ``state`` on another store or with a changed configuration.

    Parameters
    ----------
    state
        The checkpoint resumed (:func:`load_checkpoint`).
    config
        The configuration the run would continue with, store view sizes applied.
    meta
        :func:`read_store_meta` of the store given now.

    Returns
    -------
    list[str]
        The accepted changes (fields of :data:`~diffst.runs.config.RESUMABLE_FIELDS`), as
        ``"train.max_steps: 30 → 60"``.

    Raises
    ------
    InputError
        The store's genes, geometry, views or sizes differ (each difference listed), or it is
        another store (its manifest differs from the one the run was trained on).
    ConfigError
        A field outside ``RESUMABLE_FIELDS`` differs from the checkpoint's configuration (each
        listed), or ``train.max_steps`` is below the checkpoint's step.
    """
    from diffst.config import ConfigError
    from diffst.runs.config import RESUMABLE_FIELDS, config_differences, run_config_from_dict

    saved_meta = state["store_meta"]
    diffs = store_differences(saved_meta, meta)
    if diffs:
        raise InputError(
            f"{state['path']}: checkpoint was trained on a different store:\n  "
            + "\n  ".join(diffs)
        )
    old_sha, new_sha = saved_meta.get("manifest_sha256"), meta.get("manifest_sha256")
    if old_sha and new_sha and old_sha != new_sha:
        where = saved_meta.get("store_path", "another store")
        raise InputError(
            f"{meta.get('store_path', 'store')}: field manifest.json differs from the store the "
            f"run was trained on ({where}; sha256 {old_sha[:12]} vs {new_sha[:12]}); resume with "
            "that store, or train into a new run folder"
        )
    changes = config_differences(run_config_from_dict(state["config"]), config)
    refused = [c for c in changes if c[0] not in RESUMABLE_FIELDS]
    if refused:
        pairs = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in refused)
        raise ConfigError(
            f"{state['path']}: cannot resume with a changed configuration: {pairs} (a resumed "
            "run keeps its own; only train.max_steps and the logging, validation, checkpoint "
            "and device fields may change; drop these flags or train into a new run folder)"
        )
    step = int(state["step"])
    if config.train.max_steps < step:
        raise ConfigError(
            f"{state['path']}: train.max_steps={config.train.max_steps} is below the "
            f"checkpoint's step {step}; give a larger --max-steps"
        )
    return [f"{k}: {a!r} → {b!r}" for k, a, b in changes]


def training_state(
    model: torch.nn.Module,
    ema: Any,
    optimizer: torch.optim.Optimizer,
    position: tuple[int, int, int],
    config: Any,
    store_meta: dict[str, Any],
) -> dict[str, Any]:
    """The mapping written to a checkpoint (see the module docstring).

    ``position`` is ``(step, epoch, epoch_step)``: optimiser steps done, current epoch and
    steps done within it; ``config`` is the resolved :class:`RunConfig`.
    """
    from diffst._version import __version__
    from diffst.config import to_dict

    step, epoch, epoch_step = position
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "diffst_version": __version__,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "epoch_step": int(epoch_step),
        "rng": capture_rng_state(),
        "config": to_dict(config),
        "store_meta": store_meta,
    }
