"""Host allocator settings for CPU inference.

PyTorch on the CPU allocates every large intermediate tensor with ``malloc``. glibc serves blocks
above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns them to the kernel on
``free``, so a network whose activations are tens of MiB (a μ = 200 tracking graph: 180k edges × 64
floats = 46 MiB per layer output) page-faults through every new buffer, every layer, every event.
On the 2-core CI machine that was half of the tracking GNN's forward time (2.2 s → 1.06 s per event
for the h = 64, 8-iteration Interaction Network), and out-of-place element-wise ops ran 7× slower
than in place.

:func:`tune_host_allocator` keeps such blocks in the heap (``M_MMAP_MAX = 0``) and stops the heap
from being trimmed below 1 GiB of free space (``M_TRIM_THRESHOLD``), so freed buffers are reused
without new page faults. The cost is that the process keeps its peak heap: right for an inference
or benchmark process, wrong for a long-lived process that must give memory back. It is applied by
the ``gnnreco`` command (every verb) and the pipeline benchmarks; set ``GNNRECO_TUNE_MALLOC=0`` to leave the
allocator alone. Other allocators (jemalloc, tcmalloc through ``LD_PRELOAD``) and non-glibc systems
are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["tune_host_allocator"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DONE: bool | None = None


def tune_host_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Keep large freed blocks in the glibc heap for reuse (see the module docstring).

    Returns True when the settings were applied (Linux with glibc, ``GNNRECO_TUNE_MALLOC`` not
    ``0``), False otherwise; calling it again is a no-op that returns the first answer.
    """
    global _DONE
    if _DONE is not None:
        return _DONE
    _DONE = False
    if os.environ.get("GNNRECO_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if "jemalloc" in os.environ.get("LD_PRELOAD", "") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(min(trim_threshold, 2**31 - 1))))
    if ok:
        log.debug("glibc malloc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=%d", trim_threshold)
    _DONE = ok
    return ok
