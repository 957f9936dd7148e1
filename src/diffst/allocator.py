"""Process set-up for CPU work: keep large tensors out of fresh memory mappings.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB by its dynamic
rule) with a new anonymous mapping and unmaps it on ``free``, and returns the top of the heap to
the kernel beyond its trim threshold. A training or sampling step allocates and frees many
activations of tens to hundreds of MiB, so each step maps, zero-fills (one page fault per 4 KiB)
and unmaps them again: on a 2-core CPU that kernel work took 44 % of a benchmark's CPU time.
:func:`tune_allocator` raises both thresholds so those blocks are reused from the heap. The
trade-off is that freed memory stays with the process until it exits (the peak is unchanged).

Called by :func:`diffst.training.train`, :func:`diffst.inference.predict` and the command line,
so users get it without setting ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
themselves. It does nothing where those variables are set (the user's choice wins), where
``DIFFST_MALLOC_TUNING=0``, and off glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["THRESHOLD_BYTES", "tune_allocator"]

#: mmap and trim threshold set by :func:`tune_allocator` (1 GiB)
THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers of glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_state: dict[str, bool] = {}
_log = logging.getLogger("diffst")


def tune_allocator(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when in effect.

    Parameters
    ----------
    threshold_bytes
        Blocks up to this size are served from the heap and the heap is not trimmed below it.
    """
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get("DIFFST_MALLOC_TUNING", "1") == "0":
        reason = "DIFFST_MALLOC_TUNING=0"
    elif any(name in os.environ for name in _USER_VARIABLES):
        reason = "the allocator is configured by the environment"
    elif not sys.platform.startswith("linux"):
        reason = f"not glibc ({sys.platform})"
    else:
        mallopt = _mallopt()
        if mallopt is None:
            reason = "no glibc mallopt"
        else:
            applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(
                mallopt(_M_TRIM_THRESHOLD, threshold_bytes)
            )
            reason = "mallopt" if applied else "mallopt refused the thresholds"
    _log.debug("allocator thresholds %s: %s", "raised" if applied else "unchanged", reason)
    _state["applied"] = applied
    return applied


def _mallopt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    fn = getattr(libc, "mallopt", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_int)
        fn.restype = ctypes.c_int
    return fn
