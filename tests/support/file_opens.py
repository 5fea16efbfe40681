"""Whether a file was opened, from the kernel's own record (Linux inotify), for tests that
prove a server never reads a path a request names. A watch sees opens by any thread or
process; `stat` and path arithmetic do not count."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path

_IN_ACCESS = 0x001
_IN_OPEN = 0x020
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then `len` bytes of name)


class OpenWatch:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._seen = False

    def opened(self) -> bool:
        """Whether the file was opened or read since the watch began."""
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return self._seen
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                self._seen |= bool(mask & (_IN_OPEN | _IN_ACCESS))
                offset += _EVENT.size + length


@contextlib.contextmanager
def watch_opens(path: Path) -> Iterator[OpenWatch]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    try:
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_OPEN | _IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")
        yield OpenWatch(fd)
    finally:
        os.close(fd)
