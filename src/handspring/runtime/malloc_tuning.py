"""glibc's mmap threshold, held where large decode buffers return their memory.

glibc serves an allocation from mmap (and gives it back to the system on free) only above
a threshold that starts at 128 KiB and rises, up to 32 MiB, to the size of each mmapped
block freed. One large photo raises it past the few-MiB buffers that decoding and resizing
use (a 5640x3172 JPEG's rows, a resize's intermediate image), so those then come from the
per-thread heaps, where freed memory stays and fragments: a caller decoding mixed batches
of large photos grew by 50-160 MiB over six rounds. A fixed threshold of 4 MiB keeps it
within +5 MiB (bench/reliability/malformed_corpus.py --parts rss) and costs a buffer of
that size one mmap and its page faults, small beside decoding it.

Set once per process, on glibc only, and never over a threshold the user chose with
MALLOC_MMAP_THRESHOLD_ (glibc's own variable) or turned off with HANDSPRING_MALLOC_TUNING=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


@functools.cache
def hold_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 4 MiB; True if this call set it."""
    if os.environ.get("HANDSPRING_MALLOC_TUNING", "1") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
