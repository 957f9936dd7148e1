"""Training engine: ``train(store, out_dir, config) -> TrainResult`` and checkpoints.

>>> from diffst.train import resolve_run_config, train
>>> result = train("store/", "run/", resolve_run_config("small"))  # doctest: +SKIP

Names are imported lazily so that ``diffst train --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "diffst.train.config",
    "RunConfig": "diffst.train.config",
    "TrainConfig": "diffst.train.config",
    "resolve_run_config": "diffst.train.config",
    "InferenceBundle": "diffst.train.checkpoint",
    "load_checkpoint": "diffst.train.checkpoint",
    "load_for_inference": "diffst.train.checkpoint",
    "TrainResult": "diffst.train.loop",
    "TrainingDivergedError": "diffst.train.loop",
    "train": "diffst.train.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffst.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
