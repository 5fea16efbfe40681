"""What a user sees while `photos index` runs: photos saved out of those found, the
rate and the time left, updated at each commit (what a kill or a sleeping laptop
would keep), and on a resumed run how many were indexed already.

- `ProgressBar`: one tqdm line redrawn in place, for a terminal.
- `ProgressLines`: a plain line at the first commit and then at most every
  `every_s` seconds, for a log file, cron or a pipe.
- `NoProgress`: nothing (`--no-progress`, and the library's default).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm import tqdm


class IndexProgress(Protocol):
    def start(self, total: int, indexed: int) -> None:
        """A run begins: `total` photos found, `indexed` of them already in the index
        as they are (the rest is this run's work)."""
        ...

    def saved(self, done: int) -> None:
        """A commit: `done` photos of this run's work are saved so far."""
        ...

    def model_loading(self) -> None:
        """The image model starts loading (seconds, before the first photo is embedded)."""
        ...

    def model_loaded(self) -> None:
        """The model is ready: rates are measured from here, not from the run's start."""
        ...

    def close(self) -> None: ...


class NoProgress:
    def start(self, total: int, indexed: int) -> None:
        pass

    def model_loading(self) -> None:
        pass

    def model_loaded(self) -> None:
        pass

    def saved(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


def resume_line(total: int, indexed: int) -> str:
    return f"resuming: {indexed} of {total} photos already indexed, {total - indexed} to go"


class ProgressBar:
    """A tqdm line on `stream`: done/total, photos/s and the time left."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._indexed = 0

    def start(self, total: int, indexed: int) -> None:
        if indexed and total > indexed:
            print(resume_line(total, indexed), file=self._stream, flush=True)
        self._indexed = indexed
        self._bar = tqdm(
            total=total,
            initial=indexed,  # tqdm leaves these out of the rate and the time left
            unit="photos",
            desc="indexing",
            file=self._stream,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def saved(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._indexed + done - self._bar.n)

    def model_loading(self) -> None:
        if self._bar is None:  # a new index loads its model before the run starts
            print("loading the image model...", file=self._stream, flush=True)
        else:
            self._bar.set_description("indexing (loading the image model)")

    def model_loaded(self) -> None:
        """Restart the bar's clock: the seconds of the load are not photos' time."""
        if self._bar is None:
            return
        done = self._bar.n
        self._bar.reset(total=self._bar.total)
        self._bar.initial = self._bar.n = self._bar.last_print_n = done
        self._bar.set_description("indexing")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ProgressLines:
    """Plain lines on `stream`: at the first commit, then at most every `every_s` seconds."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream or sys.stderr
        self._every_s = every_s
        self._clock = clock
        self._total = self._indexed = 0
        self._started: float | None = None
        self._last_line = 0.0
        self._lines = 0

    def start(self, total: int, indexed: int) -> None:
        self._total, self._indexed = total, indexed
        self._started = self._clock()
        if indexed and total > indexed:
            self._write(resume_line(total, indexed))

    def model_loading(self) -> None:
        self._write("loading the image model...")

    def model_loaded(self) -> None:
        if self._started is not None:
            self._started = self._clock()  # the rate leaves the load out

    def saved(self, done: int) -> None:
        now = self._clock()
        if self._started is None or (self._lines and now - self._last_line < self._every_s):
            return
        self._last_line = now
        self._lines += 1
        self._write(progress_line(self._indexed + done, self._total, done, now - self._started))

    def close(self) -> None:
        pass

    def _write(self, line: str) -> None:
        print(line, file=self._stream, flush=True)


def progress_line(saved: int, total: int, done: int, seconds: float) -> str:
    """`saved` of `total` photos indexed; `done` of them by this run, in `seconds`."""
    share = 100 * saved / total if total else 100.0
    line = f"indexing: {saved}/{total} photos saved ({share:.0f}%)"
    if done and seconds > 0:
        rate = done / seconds
        left = tqdm.format_interval((total - saved) / rate)
        line += f", {rate:.1f} photos/s, {left} left"
    return line


def progress_for(stream: TextIO, show: bool | None) -> IndexProgress:
    """The progress a command shows on `stream`: a bar on a terminal, lines elsewhere,
    unless `show` says otherwise (True: the bar, False: nothing)."""
    if show is False:
        return NoProgress()
    if show or stream.isatty():
        return ProgressBar(stream)
    return ProgressLines(stream)
