"""`handspring photos index` that stops right after its Nth commit and waits there for a
signal, for tests that kill a run at a known commit:

    python -m tests.photos.held_commits N HELD_FILE [index options...]

HELD_FILE appears once it waits, so the test kills a process whose store holds exactly
what N commits saved (see held_index for holding between commits).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from handspring.photos.cli import photos
from handspring.photos.indexing.indexer import Indexer


def main() -> None:
    hold_after, held = int(sys.argv[1]), Path(sys.argv[2])
    commit = Indexer._commit
    commits = 0

    def commit_then_hold(self: Indexer) -> None:
        nonlocal commits
        commit(self)
        commits += 1
        if commits == hold_after:
            held.touch()
            while True:  # until a signal ends it
                time.sleep(0.05)

    Indexer._commit = commit_then_hold  # type: ignore[method-assign]
    photos.main(["index", *sys.argv[3:]], prog_name="handspring photos")


if __name__ == "__main__":
    main()
