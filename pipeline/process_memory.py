"""Handing freed heap memory back to the operating system, where the C library allows it.

glibc's malloc keeps freed memory in its arenas for reuse rather than returning it, so a process
that built something large (an ONNX session, a tokenised corpus) and freed it still counts it in
its resident set; on a Heroku dyno that is memory the dyno is billed and throttled on.
``malloc_trim(0)`` returns the free pages at the top of each arena and the unused ones inside.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    return getattr(ctypes.CDLL(library), "malloc_trim", None)


def release_free_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the OS; False where that is not possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
