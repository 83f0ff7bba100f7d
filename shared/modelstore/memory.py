"""Resident memory of this process, read from ``/proc`` (Linux, where scoring runs).

A model's cost is measured as the growth of resident memory (RSS) across its load and
warm-up: onnxruntime allocates sessions, initializers and its arena in C++, where
``tracemalloc`` and ``sys.getsizeof`` see nothing, and ONNX file size times a factor is
a guess that is wrong both ways (a tiny graph's session costs far more than its file; a
big graph's external weights may be memory-mapped). Loads are serialised by the caller
so deltas do not overlap, and free heap memory is handed back to the system first
(glibc ``malloc_trim``): otherwise memory freed by an evicted model is reused by the next
load and its growth reads as zero (measured: 0-4 KiB per tiny model without, a steady
28-40 KiB with).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["rss_bytes", "trim_heap"]

_STATM: Final = Path("/proc/self/statm")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process in bytes (0 where ``/proc`` is missing)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
        return trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM: Final = _malloc_trim()


def trim_heap() -> None:
    """Return free heap pages to the system (glibc); nothing elsewhere."""
    if _TRIM is not None:
        _TRIM(0)
