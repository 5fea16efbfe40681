"""What the reliability scripts share: where the repository is, a tiny random CLIP, a live
`handspring serve` on loopback, RSS readings, and the rows each script hands to report.py.

Every script writes its rows with `--json PATH` as
`{"script": NAME, "rows": [{"check", "measured", "target", "met"}], "details": {...}}`;
`met` is true, false, or null when a row has no target. report.py collects those files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server_bench import Server  # noqa: E402

CLI = str(Path(sys.executable).parent / "handspring")


@dataclass(frozen=True)
class Row:
    """One line of the reliability table."""

    check: str
    measured: str
    target: str
    met: bool | None  # None: measured for information, no target


def write_results(path: Path | None, script: str, rows: Sequence[Row], details: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"script": script, "rows": [asdict(r) for r in rows], "details": details}
    path.write_text(json.dumps(payload, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| check | measured | target | met |", "|---|---|---|---|"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.check} | {r.measured} | {r.target} | {met} |")
    return "\n".join(lines)


def bench_env(work: Path) -> dict[str, str]:
    """The environment of every process a script starts: its own graph cache, hub offline."""
    return dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")


def isolate_caches(work: Path) -> None:
    """The same settings for this process (before handspring or huggingface_hub is imported)."""
    os.environ.update(bench_env(work))


def tiny_clip(work: Path, layout: str = "hf") -> Path:
    """The test suite's tiny random CLIP, written once under `work`: "hf" (transformers
    layout) or "st" (sentence-transformers', as the photo indexer's default model)."""
    from tests.support.checkpoints import TINY, write_hf_clip, write_sentence_transformers_clip

    folder = work / f"tiny-clip-{layout}"
    if not (folder / "config.json").exists() and not (folder / "modules.json").exists():
        write = write_hf_clip if layout == "hf" else write_sentence_transformers_clip
        write(folder, TINY, seed=0)
    return folder


def tiny_imagebind(work: Path) -> Path:
    """The test suite's tiny random ImageBind (audio, depth, thermal, IMU); needs torch."""
    from tests.support.imagebind_reference import TINY, write_imagebind_checkpoint

    folder = work / "tiny-imagebind"
    if not (folder / "config.json").exists():
        write_imagebind_checkpoint(folder, TINY, seed=3)
    return folder


@contextlib.contextmanager
def served(
    work: Path, models: Sequence[str], flags: Sequence[str] = (), name: str = "server"
) -> Iterator[Server]:
    """`handspring serve` in its own process on a free loopback port, models preloaded;
    stopped (SIGTERM, then SIGKILL) on the way out. Its log: work/NAME.log."""
    argv = [CLI, "serve", "--preload", "--log-level", "warning", "--graceful-timeout", "2"]
    for model in models:
        argv += ["--model", model]
    server = Server("handspring", name, [*argv, *flags], bench_env(work), work / f"{name}.log")
    server.start(timeout_s=300)
    try:
        yield server
    finally:
        server.stop()


def rss_mib(pid: int | str = "self") -> float:
    """VmRSS of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


NOBODY = 65534


def drop_to_nobody() -> bool:
    """Run the rest of this process (every thread) with the effective ids of `nobody`, so
    files of mode 000 are unreadable, as they are to a user; root reads them all. Call it
    after everything is imported: the interpreter's own files may be out of nobody's reach.
    False when not root (nothing to drop)."""
    if os.geteuid() != 0:
        return False
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    return True


def readable_by_all(folder: Path) -> None:
    """Let `nobody` read what root wrote under `folder` (safetensors and the graph cache's
    index are written with mode 600)."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def busy_note() -> str:
    """The machine's load when a script ran: its figures are read against it."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min)"
