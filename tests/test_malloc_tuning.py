"""glibc's mmap threshold held at 4 MiB once images are decoded (runtime.malloc_tuning):
after a large block is freed, a few-MiB buffer still comes from mmap, so its memory goes
back to the system when freed, instead of staying in a fragmented heap."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# mallinfo2's hblkhd: bytes in mmapped blocks now. A 20 MiB block freed raises glibc's
# own threshold to 20 MiB; then 6 MiB comes from mmap only under a held threshold.
PROBE = """
import ctypes, json
import handspring.preprocess.decode
from handspring.runtime.malloc_tuning import hold_mmap_threshold
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
big = np.ones(20 * 2**20, np.uint8)
del big
before = libc.mallinfo2().hblkhd
mid = np.ones(6 * 2**20, np.uint8)
grown = libc.mallinfo2().hblkhd - before
print(json.dumps({"held": hold_mmap_threshold(), "mmapped": grown >= 6 * 2**20}))
"""


def probe(**env: str) -> dict[str, bool]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environment | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_few_mib_buffer_is_mmapped_after_a_large_one_is_freed() -> None:
    assert probe() == {"held": True, "mmapped": True}


def test_without_the_tuning_glibc_keeps_it_in_the_heap() -> None:
    # The behaviour the tuning exists for, shown: so the first test cannot pass by chance.
    assert probe(HANDSPRING_MALLOC_TUNING="0") == {"held": False, "mmapped": False}


def test_a_threshold_the_user_set_is_left_alone() -> None:
    assert probe(MALLOC_MMAP_THRESHOLD_="65536")["held"] is False
