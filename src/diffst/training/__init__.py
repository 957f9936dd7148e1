"""Training engine: ``train(store, out_dir, config) -> TrainResult`` and checkpoints.

>>> from diffst.training import resolve_run_config, train
>>> result = train("store/", "run/", resolve_run_config("small"))  # doctest: +SKIP

Names are imported lazily so that ``diffst train --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "diffst.runs.config",
    "RunConfig": "diffst.runs.config",
    "TrainConfig": "diffst.runs.config",
    "resolve_run_config": "diffst.runs.config",
    "InferenceBundle": "diffst.runs.checkpoint",
    "load_checkpoint": "diffst.runs.checkpoint",
    "load_for_inference": "diffst.runs.checkpoint",
    "TrainResult": "diffst.training.loop",
    "TrainingDivergedError": "diffst.training.loop",
    "train": "diffst.training.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffst.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
