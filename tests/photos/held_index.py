"""`handspring photos index` that stops once its Nth embedded photo is written to the
store (before any commit that would follow) and waits there for a signal, for tests of
Ctrl-C and kills mid-run:

    python -m tests.photos.held_index N HELD_FILE [index options...]

HELD_FILE appears once it waits: the test signals a process in a known state rather
than one that is usually still running.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from handspring.photos.cli import photos
from handspring.photos.indexing.indexer import Indexer


def main() -> None:
    hold_after, held = int(sys.argv[1]), Path(sys.argv[2])
    write = Indexer._write_embedded
    written = 0

    def write_then_hold(self: Indexer, *args: Any) -> None:
        nonlocal written
        write(self, *args)
        written += 1
        if written == hold_after:
            held.touch()
            while True:  # until a signal ends it
                time.sleep(0.05)

    Indexer._write_embedded = write_then_hold  # type: ignore[method-assign]
    photos.main(["index", *sys.argv[3:]], prog_name="handspring photos")


if __name__ == "__main__":
    main()
