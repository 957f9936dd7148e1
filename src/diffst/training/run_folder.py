"""The run folder of ``diffst train``: what it holds, and when a run may write into it.

A run folder holds :data:`RUN_FILES` (``config.yaml``, ``log.csv``, ``tensorboard/``,
``checkpoints/``). A new run starts in a missing or empty folder, in the folder of an earlier
run that was stopped before its first checkpoint (nothing there can be resumed), or, with
``overwrite``, in any earlier run folder; the earlier run's files are removed first.
``resume`` continues the run in place. Nothing else in the folder is ever touched.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from diffst.config import ConfigError
from diffst.config import remove_stale_temporaries as remove_stale

__all__ = ["RUN_FILES", "check_run_folder", "clear_run_folder", "remove_stale_temporaries"]

#: files and folders a training run writes into its folder
RUN_FILES = ("config.yaml", "log.csv", "tensorboard", "checkpoints")


def check_run_folder(out_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Raise :class:`ConfigError` unless a run may write into ``out_dir``.

    Parameters
    ----------
    out_dir
        Run folder.
    resume
        The run continues from a checkpoint (the folder may hold its files).
    overwrite
        A new run may replace an earlier run's files.

    Returns
    -------
    bool
        The folder holds an earlier run's files that the new run must remove first
        (:func:`clear_run_folder`).
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; give one of them")
    if resume or not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    present = sorted(p.name for p in out_dir.iterdir())
    if not present:
        return False
    run_files = [name for name in present if name in RUN_FILES]
    if not run_files:
        raise ConfigError(
            f"{out_dir}: folder is not empty and not a diffst run folder ({present[:5]}); "
            "give a new or empty folder"
        )
    checkpoints = sorted((out_dir / "checkpoints").glob("*.pt"))
    if checkpoints and not overwrite:
        steps = [p for p in checkpoints if p.name.startswith("step_")]
        done = f" (checkpoints up to {steps[-1].stem})" if steps else ""
        raise ConfigError(
            f"{out_dir}: run folder exists{done}; pass --resume to continue that run or "
            "--overwrite to start it again"
        )
    return True


def clear_run_folder(out_dir: Path) -> None:
    """Remove an earlier run's :data:`RUN_FILES` from ``out_dir`` (``overwrite``)."""
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete the hidden temporaries killed writers left in ``out_dir`` and ``checkpoints/``:
    ``.config.yaml.*.tmp``, ``.log.csv.*.tmp`` and ``.<name>.pt.<pid>.tmp`` of a dead process."""
    names = "|".join(re.escape(n) for n in RUN_FILES if "." in n)
    return [
        *remove_stale(out_dir, rf"\.({names})\..+\.tmp"),
        *remove_stale(out_dir / "checkpoints", r"\..+\.pt\.(?P<pid>\d+)\.tmp"),
    ]
