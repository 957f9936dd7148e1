"""diffst.data: a prepared patch store → tensors for training and evaluation.

``PatchDataset``, ``StoreInfo`` and ``load_manifest`` live in :mod:`diffst.data.dataset`
(imported lazily, it needs torch); the count transforms in :mod:`diffst.data.transforms`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NormStats",
    "PatchDataset",
    "StoreInfo",
    "inverse_normalise",
    "load_manifest",
    "normalise",
]

_WHERE = {
    "PatchDataset": "diffst.data.dataset",
    "StoreInfo": "diffst.data.dataset",
    "load_manifest": "diffst.data.dataset",
    "NormStats": "diffst.data.transforms",
    "normalise": "diffst.data.transforms",
    "inverse_normalise": "diffst.data.transforms",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'diffst.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
