"""Keeping a long-running local process's resident memory near what it holds (glibc's malloc, Linux).

A threaded Python server (the moto server, the runtime's pollers and autosave) frees most of what a request or a
save allocated, but glibc keeps the freed pages: in one arena per thread that ever allocated (up to 8 x CPUs),
and inside heaps whose top is still in use. Resident memory then follows the largest transient peak of every
thread, not the data. Two calls bound it:

- `limit_arenas()` before the threads start: a couple of arenas shared by all threads instead of one per thread.
- `release_free_memory()` after a burst of transient allocations (a save, a TTL sweep): malloc_trim(0) gives
  back every whole free page, also inside the heaps (madvise), not only at their top.

Elsewhere (another libc, another OS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
ARENAS = 2


@cache
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl has neither: a missing symbol means there is nothing to tune.
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before starting threads: arenas already made stay). True when applied."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1)


def release_free_memory() -> bool:
    """Return the free pages of every arena to the OS. True when some memory was released."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
