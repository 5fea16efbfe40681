"""The malformed corpus through the library: `handspring.load(...)` and `embed_images` on
batches of bad items with good ones mixed in, in a worker process the driver restarts
when it dies or stalls; and the memory of a caller who keeps every result.

The driver names each batch that killed or stalled its worker, then runs that batch's
items one by one, so a crash or a hang is pinned on its file.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reliability import corpus
from bench.reliability.common import ROOT, bench_env, drop_to_nobody, rss_mib

SCRIPT = str(ROOT / "bench" / "reliability" / "malformed_corpus.py")
BAD_PER_BATCH = 12  # with GOOD_PER_BATCH good ones: 16 items, a batch of 8 twice over
GOOD_PER_BATCH = 4
BATCH_SIZE = 8
STALL_S = 90.0  # no batch done for this long: the worker hangs
SPECIAL_STALL_S = 20.0
EXACT = 1e-5  # a good item's vector in a mixed batch against the same item alone


@dataclass
class Tally:
    """What one part of the run saw. `examples` keeps the first few of each problem."""

    items: int = 0
    embedded: int = 0
    errors: int = 0
    crashes: int = 0
    hangs: int = 0
    unnamed: int = 0
    good_lost: int = 0
    bad_accepted: int = 0  # expected to fail, embedded
    with_traceback: int = 0  # errors that keep their traceback (and its frames) alive
    misleading: int = 0  # "needs the pillow-heif plugin" while it is registered
    unreported: int = 0  # indexer: a file that must fail, with no row and not in the summary
    slowest_s: float = 0.0
    slowest: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, problem: str, text: str, limit: int = 8) -> None:
        shown = self.examples.setdefault(problem, [])
        if len(shown) < limit:
            shown.append(text)


def _plan(entries: list[corpus.Entry], seed: int) -> list[list[tuple[int, str]]]:
    """Batches of (manifest index, "path" | "bytes"): regular files both ways, shuffled;
    each special file alone, by path."""
    regular = [
        (i, form) for i, e in enumerate(entries) if not e.special for form in ("path", "bytes")
    ]
    random.Random(seed).shuffle(regular)
    batches = [regular[s : s + BAD_PER_BATCH] for s in range(0, len(regular), BAD_PER_BATCH)]
    return batches + [[(i, "path")] for i, e in enumerate(entries) if e.special]


# ------------------------------------------------------------------------ worker


def library_worker(args: Any) -> None:
    """Embed the plan's batches from `args.start` on; one JSON line per batch."""
    import warnings

    import numpy as np
    import pillow_heif
    from PIL import Image

    import handspring

    warnings.simplefilter("ignore")  # Pillow's "corrupt EXIF" chatter
    pillow_heif.register_heif_opener()  # as the README tells HEIC users to
    Image.init()  # every plugin imported now, while the interpreter's files are readable
    folder = Path(args.corpus)
    entries = corpus.load(folder)
    plan = json.loads(Path(args.plan).read_text())
    goods = sorted((folder / corpus.GOOD_FOLDER).iterdir())
    model = handspring.load(args.model)
    alone = np.stack([model.embed_images([g]).embeddings[0] for g in goods])
    with open(args.out, "a") as out:  # opened first: nobody may not create it
        drop_to_nobody()
        for number in range(args.start, len(plan)):
            items: list[Any] = []
            labels: list[tuple[str, int]] = []  # ("good", g) or ("bad", manifest index)
            for position, (index, form) in enumerate(plan[number]):
                if position % (BAD_PER_BATCH // GOOD_PER_BATCH) == 0:
                    g = (number + position) % len(goods)
                    items.append(str(goods[g]))
                    labels.append(("good", g))
                path = folder / entries[index].name
                items.append(path.read_bytes() if form == "bytes" else str(path))
                labels.append(("bad", index))
            start = time.perf_counter()
            result = model.embed_images(items, batch_size=BATCH_SIZE)
            seconds = time.perf_counter() - start
            errors = dict(zip(result.error_index, result.errors, strict=True))
            rows = []
            for row, (kind, index) in enumerate(labels):
                error = errors.get(row)
                outcome: dict[str, Any] = {"kind": kind, "index": index}
                if error is None:
                    vector = result.embeddings[row]
                    outcome["embedded"] = bool(np.isfinite(vector).all())
                    if kind == "good":
                        outcome["exact"] = float(np.abs(vector - alone[index]).max()) <= EXACT
                else:
                    expected_name = items[row] if isinstance(items[row], str) else f"<bytes #{row}>"
                    outcome.update(
                        embedded=False,
                        reason=error.reason,
                        named=error.item == expected_name
                        and str(error).startswith(f"{expected_name}: ")
                        and bool(error.reason),
                        traceback=error.__traceback__ is not None,
                    )
                rows.append(outcome)
            out.write(json.dumps({"batch": number, "seconds": seconds, "rows": rows}) + "\n")
            out.flush()


def rss_worker(args: Any) -> None:
    """A caller that keeps every result (errors included) of mixed batches, round after
    round: one JSON line of VmRSS readings."""
    import pillow_heif

    import handspring

    pillow_heif.register_heif_opener()
    folder = Path(args.corpus)
    entries = corpus.load(folder)
    bad = [str(folder / e.name) for e in entries if e.expect == corpus.ERROR and not e.special]
    big = sorted(str(p) for p in Path(args.big).iterdir())
    goods = sorted(str(p) for p in (folder / corpus.GOOD_FOLDER).iterdir())
    items = [x for trio in zip(big, goods * len(big), bad, strict=False) for x in trio]
    items += bad[len(big) :]
    model = handspring.load(args.model)
    model.embed_images(goods)
    start = rss_mib()
    kept = []
    readings = []
    seconds = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        kept.append(model.embed_images(items, batch_size=16))
        seconds.append(time.perf_counter() - began)
        readings.append(rss_mib())
    errors = [e for result in kept for e in result.errors]
    print(json.dumps({
        "start": start, "readings": readings, "seconds": seconds, "items": len(items),
        "big": len(big), "kept_errors": len(errors),
        "with_traceback": sum(e.__traceback__ is not None for e in errors),
        "with_context": sum(e.__context__ is not None or e.__cause__ is not None for e in errors),
    }))  # fmt: skip


# ------------------------------------------------------------------------ driver


def _spawn(work: Path, worker: str, extra: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, SCRIPT, "--worker", worker, *extra],
            env=bench_env(work),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def run_library(work: Path, folder: Path, model: Path, seed: int) -> Tally:
    entries = corpus.load(folder)
    plan = _plan(entries, seed)
    plan_file, out = work / "library-plan.json", work / "library-results.jsonl"
    out.unlink(missing_ok=True)
    failed: dict[int, str] = {}  # batch -> "crash" | "hang"
    start = barren = 0
    while start < len(plan):
        plan_file.write_text(json.dumps(plan))
        done_before = len(_lines(out))
        args = ["--corpus", str(folder), "--model", str(model), "--plan", str(plan_file)]
        args += ["--start", str(start), "--out", str(out)]
        process = _spawn(work, "library", args, work / "library-worker.log")
        last, progress = time.monotonic(), done_before
        while process.poll() is None:
            time.sleep(0.2)
            done = len(_lines(out))
            if done != progress:
                last, progress = time.monotonic(), done
            batch = start + done - done_before
            limit = SPECIAL_STALL_S if len(plan[min(batch, len(plan) - 1)]) == 1 else STALL_S
            if time.monotonic() - last > limit + (30 if done == done_before else 0):
                process.kill()
                process.wait()
                failed[batch] = "hang"
        next_batch = start + len(_lines(out)) - done_before
        if process.returncode == 0 and next_batch >= len(plan):
            break
        barren = barren + 1 if next_batch == start else 0
        if barren >= 3:  # dies before any batch: a broken worker, not a hostile file
            log = (work / "library-worker.log").read_text()[-3000:]
            raise RuntimeError(f"the library worker keeps failing at once:\n{log}")
        if next_batch not in failed:
            failed[next_batch] = "crash" if process.returncode else "stopped"
        culprit = plan[next_batch]
        if len(culprit) > 1:  # pin it on one file: its items again, one batch each
            plan += [[item] for item in culprit]
        start = next_batch + 1
        print(f"  library: batch {next_batch} {failed[next_batch]}; going on", file=sys.stderr)
    return _tally(entries, plan, _lines(out), failed)


def _tally(
    entries: list[corpus.Entry], plan: list[list], lines: list[dict], failed: dict[int, str]
) -> Tally:
    tally = Tally()
    for batch, kind in failed.items():
        items = plan[batch]
        names = ", ".join(f"{entries[i].name} ({form})" for i, form in items)
        if len(items) == 1:  # single items are the ones pinned down
            tally.crashes += kind == "crash"
            tally.hangs += kind == "hang"
        tally.note(kind, f"batch {batch}: {names}")
    for line in lines:
        if line["seconds"] > tally.slowest_s:
            tally.slowest_s = line["seconds"]
            items = plan[line["batch"]]
            tally.slowest = ", ".join(entries[i].name for i, _ in items)
        for row in line["rows"]:
            if row["kind"] == "good":
                if not (row["embedded"] and row.get("exact", False)):
                    tally.good_lost += 1
                    tally.note("good lost", f"batch {line['batch']}: {row}")
                continue
            entry = entries[row["index"]]
            tally.items += 1
            if row["embedded"]:
                tally.embedded += 1
                if entry.expect == corpus.ERROR:
                    tally.bad_accepted += 1
                    tally.note("must fail, embedded", entry.name)
                continue
            tally.errors += 1
            tally.with_traceback += row["traceback"]
            if "plugin registered" in row["reason"]:  # the worker registers pillow-heif
                tally.misleading += 1
                tally.note("blames a missing plugin", f"{entry.name}: {row['reason']}")
            if not row["named"]:
                tally.unnamed += 1
                tally.note("unnamed", f"{entry.name}: {row['reason']}")
            if entry.expect == corpus.EMBED:
                tally.good_lost += 1
                tally.note("good lost", f"{entry.name}: {row['reason']}")
    return tally


def run_rss(work: Path, folder: Path, model: Path, rounds: int, count: int, size: str) -> dict:
    width, height = (int(v) for v in size.split("x"))
    big = work / "big-truncated"
    if len(list(big.glob("*.jpg"))) != count:
        print(f"  making {count} truncated {size} JPEGs ...", file=sys.stderr)
        corpus.big_truncated_jpegs(big, count, (width, height))
    args = ["--corpus", str(folder), "--model", str(model), "--big", str(big)]
    out = subprocess.run(
        [sys.executable, SCRIPT, "--worker", "rss", *args, "--rounds", str(rounds)],
        env=bench_env(work),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return {"crashed": out.returncode, "stderr": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])
