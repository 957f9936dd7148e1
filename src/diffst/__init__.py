"""diffst: super-resolved spatial transcriptomics by cross-modal conditional diffusion.

The pipeline, one function per ``diffst`` command (:mod:`diffst.api`)::

    import diffst

    sample = diffst.read_xenium("xenium_outs/")  # or read_merfish, read_visium, diffst.read
    store = diffst.prepare(sample, "store/", overrides=["genes=50"])
    run = diffst.train("store/", "run/", preset="small")
    adata = diffst.predict("run/", sample, "pred.h5ad")
    report = diffst.evaluate(adata, "store/")

Importing ``diffst`` is light: each name loads its module (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from diffst._version import __version__

if TYPE_CHECKING:
    from diffst.api import benchmark, evaluate, predict, prepare, read, read_prediction, train
    from diffst.io import (
        read_cosmx,
        read_h5ad,
        read_legacy_st,
        read_merfish,
        read_sample,
        read_visium,
        read_visium_hd,
        read_xenium,
    )
    from diffst.io.sample import SpatialSample

__all__ = [
    "SpatialSample",
    "__version__",
    "benchmark",
    "evaluate",
    "predict",
    "prepare",
    "read",
    "read_cosmx",
    "read_h5ad",
    "read_legacy_st",
    "read_merfish",
    "read_prediction",
    "read_sample",
    "read_visium",
    "read_visium_hd",
    "read_xenium",
    "train",
]

_API = frozenset(
    {"benchmark", "evaluate", "predict", "prepare", "read", "read_prediction", "train"}
)
_EXPORTS = {
    name: "diffst.api"
    if name in _API
    else "diffst.io.sample"
    if name == "SpatialSample"
    else "diffst.io"
    for name in __all__
    if name != "__version__"
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffst' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
