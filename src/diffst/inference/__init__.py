"""Whole-section super-resolution with uncertainty: checkpoint + section → AnnData.

>>> from diffst.inference import PredictConfig, predict
>>> adata = predict("run/", sample, "pred.h5ad", PredictConfig(sampler="dpmpp", steps=10))
"""

from __future__ import annotations

from typing import Any

__all__ = ["PredictConfig", "predict"]


def __getattr__(name: str) -> Any:
    """Lazy exports, so that ``diffst --help`` does not import torch."""
    if name == "predict":
        from diffst.inference.api import predict

        return predict
    if name == "PredictConfig":
        from diffst.inference.config import PredictConfig

        return PredictConfig
    raise AttributeError(f"module 'diffst.inference' has no attribute {name!r}")
