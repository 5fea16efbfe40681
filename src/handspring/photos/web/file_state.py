"""Whether an indexed photo's file is still the one indexed: the web app serves a file
only then, and tells the page what happened to it otherwise."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Literal

from handspring.photos.stores.records import Photo

MTIME_TOLERANCE = 1e-6  # seconds; mtimes round-trip through the store as doubles

State = Literal["ok", "missing", "changed", "unreadable"]
# The HTTP status a request for the file gets in each state.
STATUS: dict[State, int] = {"ok": 200, "missing": 410, "changed": 409, "unreadable": 500}


@dataclass(frozen=True)
class FileState:
    state: State
    message: str | None  # for a person: what happened and what to do; None when ok


def file_state(photo: Photo) -> FileState:
    try:
        info = os.stat(photo.path)
    except FileNotFoundError:
        return FileState(
            "missing", f"photo {photo.id} ({photo.path}) is no longer on disk; index again"
        )
    except OSError as exc:
        return FileState("unreadable", f"photo {photo.id} ({photo.path}): {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return FileState("missing", f"photo {photo.id} ({photo.path}) is no longer a file")
    if info.st_size != photo.size or abs(info.st_mtime - photo.mtime) > MTIME_TOLERANCE:
        return FileState(
            "changed", f"photo {photo.id} ({photo.path}) changed since it was indexed; index again"
        )
    return FileState("ok", None)
