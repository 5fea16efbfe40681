"""The malformed corpus through the photo indexer: `handspring photos index` on the corpus
folder (good photos in `good/`), as the user `nobody` so that mode-000 files and folders
are unreadable, twice, on each store.

The first run must complete; every good photo and every odd-but-valid file must get a
vector; every file that must fail must be recorded with its reason (a row naming its
path) or named in the run's summary; the second run must change nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.reliability import corpus
from bench.reliability.common import NOBODY, bench_env, drop_to_nobody, readable_by_all
from bench.reliability.corpus_library import SCRIPT, Tally

SUMMARY = re.compile(
    r"(?P<found>\d+) photos found .*?(?P<added>\d+) added, (?P<updated>\d+) updated, "
    r"(?P<moved>\d+) moved, .*?(?P<deleted>\d+) deleted, (?P<failed>\d+) could not be read"
)
SCANNED = {s.lstrip(".") for s in (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif",
                                   ".tiff", ".bmp", ".heic", ".heif")}  # fmt: skip


def _cli(argv: list[str]) -> tuple[str, Any]:
    """`handspring photos ARGV` in this process: what it printed and its exit status."""
    import click

    from handspring.photos.cli import photos

    buffer = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
        try:
            photos.main(argv, standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        except click.ClickException as exc:
            code = exc.exit_code
            buffer.write(exc.format_message())
        except Exception:
            code = "exception"
            buffer.write(traceback.format_exc())
    return buffer.getvalue(), code


def indexer_worker(args: Any) -> None:
    """Warm up on the good photos (imports, graph cache), drop to nobody, index the
    corpus twice; one JSON line: both runs' output and status, and the store's rows."""
    import warnings

    from PIL import Image

    from handspring.photos.stores.store import open_store

    warnings.simplefilter("ignore")
    Image.init()
    common = ["--image-model", args.model, "--no-progress"]
    _cli(["index", args.warm, "--db", args.warm_db, *common])
    drop_to_nobody()
    runs = [_cli(["index", args.root, "--db", args.db, *common]) for _ in range(2)]
    store = open_store(args.db, read_only=True)
    try:
        rows = [
            {"path": f.path, "id": f.id, "vector": f.has_vector, "error": f.error}
            for f in store.files_under([args.root])
        ]
    finally:
        store.close()
    print(json.dumps({"runs": runs, "rows": rows}))


def run_indexer(work: Path, folder: Path, model: Path, store: str) -> tuple[Tally, dict]:
    index = work / f"index-{store}"
    index.mkdir(exist_ok=True)
    os.chown(index, NOBODY, NOBODY)
    url = f"sqlite://{index / 'photos.db'}" if store == "sqlite" else f"qdrant://{index / 'q'}"
    warm_url = (
        f"sqlite://{work / 'warm.db'}" if store == "sqlite" else f"qdrant://{work / 'warm-q'}"
    )
    # The worker warms up as root (graphs built, cache written), then reads as nobody.
    readable_by_all(model)
    subprocess.run(
        [sys.executable, "-c", f"import handspring; handspring.load({str(model)!r}, "
         "modalities=('image',), precision='int8', fast_decode=True)"],
        env=bench_env(work), check=True,
    )  # fmt: skip
    readable_by_all(work / "cache")
    args = ["--root", str(folder), "--db", url, "--model", str(model)]
    args += ["--warm", str(folder / corpus.GOOD_FOLDER), "--warm-db", warm_url]
    done = subprocess.run(
        [sys.executable, SCRIPT, "--worker", "indexer", *args],
        env=bench_env(work),
        capture_output=True,
        text=True,
    )
    tally = Tally()
    if done.returncode != 0:
        tally.crashes = 1
        tally.note("crash", f"exit {done.returncode}: {done.stderr[-1500:]}")
        return tally, {"completed": False}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return _tally(folder, result, tally)


def _tally(folder: Path, result: dict, tally: Tally) -> tuple[Tally, dict]:
    (first, first_code), (second, second_code) = result["runs"]
    rows = {r["path"]: r for r in result["rows"]}
    skipped: list[str] = []
    special: dict[str, str] = {}  # what became of each special file
    for entry in corpus.load(folder):
        path = str(folder / entry.name)
        row = rows.get(path)
        if entry.special:
            said = "named in the summary" if path in first else "not mentioned"
            special[entry.name] = f"row: {row['error'] or 'vector'}" if row else said
        if row is None:
            if entry.special or Path(path).suffix.lstrip(".").lower() not in SCANNED:
                skipped.append(entry.name)  # not a file the scan takes: reported or not, no loss
                continue
            if entry.expect == corpus.EMBED:
                tally.good_lost += 1
                tally.note("good lost", f"{entry.name}: no row")
            elif path not in first:
                tally.unreported += 1
                tally.note("unreported", entry.name)
            continue
        tally.items += 1
        if row["vector"]:
            tally.embedded += 1
            if entry.expect == corpus.ERROR:
                tally.bad_accepted += 1
                tally.note("must fail, embedded", entry.name)
            continue
        tally.errors += 1
        if not row["error"]:
            tally.unnamed += 1
            tally.note("no reason", entry.name)
        if entry.expect == corpus.EMBED:
            tally.good_lost += 1
            tally.note("good lost", f"{entry.name}: {row['error']}")
    good = sorted((folder / corpus.GOOD_FOLDER).iterdir())
    tally.good_lost += sum(not rows.get(str(p), {}).get("vector") for p in good)
    second_summary = SUMMARY.search(second)
    changed = (
        None
        if second_summary is None
        else sum(int(second_summary[k]) for k in ("added", "updated", "moved", "deleted", "failed"))
    )
    details = {
        "completed": first_code == 0 and SUMMARY.search(first) is not None,
        "exit_codes": [first_code, second_code],
        "summary": first.splitlines()[:1],
        "second_run_changes": changed,
        "not_scanned": skipped,
        "special": special,
        "output_tail": first.splitlines()[-12:],
    }
    if not details["completed"]:
        tally.note("did not complete", f"exit {first_code}: {first[-1500:]}")
    return tally, details
