"""The malformed corpus: 300+ generated hostile files (bench/reliability/corpus.py) through
the library, a live server, the photo indexer, and the memory of a caller who keeps
every error, in one run.

(a) library: `handspring.load` (tiny random CLIP, fp32) and `embed_images` on batches of
    12 corpus items (each regular file once by path, once as bytes; special files alone,
    by path) and 4 good photos, as the user `nobody`. Every good photo must come back
    exactly as when embedded alone; every failure must be an error naming its item.
    A worker that dies or stalls is counted, and its batch is run again item by item.
(b) server: each regular file between two good images on `POST /api/embed/images` and
    `/api/embed/images/upload`, and alone on `POST /v1/embeddings` (modality image).
    Never a 5xx; every refusal names the item; the server alive at the end.
(c) indexer: `handspring photos index` on the corpus folder, as `nobody`, twice, on each
    store: completes, good photos indexed, bad files recorded with a reason.
(d) memory: a caller keeping every result of mixed batches (large truncated JPEGs, the
    corpus's must-fail files, good photos) round after round: VmRSS at the start and
    after each round (target: within +50 MiB).

    python bench/reliability/malformed_corpus.py                 # about 3-5 minutes
    python bench/reliability/malformed_corpus.py --parts library,server --json out.json
    python bench/reliability/malformed_corpus.py --rss-rounds 10 --big 5640x3172

Needs the test extra (the checkpoint writers live in tests/support). Run as root, it
drops to `nobody` for (a) and (c), so files of mode 000 are unreadable as for a user.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reliability import corpus  # noqa: E402
from bench.reliability.common import (  # noqa: E402
    Row,
    busy_note,
    isolate_caches,
    markdown_table,
    tiny_clip,
    write_results,
)
from bench.reliability.corpus_library import Tally  # noqa: E402

RSS_TARGET_MIB = 50.0
PARTS = ("library", "server", "indexer", "rss")


def _worker(argv: list[str]) -> None:
    from bench.reliability import corpus_indexer, corpus_library

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["library", "rss", "indexer"])
    for name in ("corpus", "model", "plan", "out", "big", "root", "db", "warm", "warm-db"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    {
        "library": corpus_library.library_worker,
        "rss": corpus_library.rss_worker,
        "indexer": corpus_indexer.indexer_worker,
    }[args.worker](args)


def _rows_for(part: str, tally: Tally, extra: str = "") -> list[Row]:
    rows = [
        Row(f"corpus, {part}: crashes + hangs", f"{tally.crashes} + {tally.hangs} over "
            f"{tally.items} items{extra}", "0", tally.crashes + tally.hangs == 0),
        Row(f"corpus, {part}: errors not naming their item", f"{tally.unnamed} of {tally.errors}",
            "0", tally.unnamed == 0),
        Row(f"corpus, {part}: good items lost", str(tally.good_lost), "0", tally.good_lost == 0),
        Row(f"corpus, {part}: must-fail files embedded", str(tally.bad_accepted), "0",
            tally.bad_accepted == 0),
    ]  # fmt: skip
    return rows


def _print_tally(part: str, tally: Tally) -> None:
    print(
        f"\n{part}: {tally.items} items, {tally.embedded} embedded, {tally.errors} errors; "
        f"slowest {tally.slowest_s:.2f} s ({tally.slowest[:120]})",
        file=sys.stderr,
    )
    for problem, shown in tally.examples.items():
        for text in shown:
            print(f"  {problem}: {text[:300]}", file=sys.stderr)


def run(args: argparse.Namespace, work: Path) -> tuple[list[Row], dict[str, Any]]:
    from bench.reliability import corpus_indexer, corpus_library, corpus_server

    folder = work / "corpus"
    print("writing the corpus ...", file=sys.stderr)
    entries = corpus.build(folder, seed=args.seed)
    corpus.good_photos(folder)
    families = collections.Counter(e.family for e in entries)
    print(f"  {len(entries)} files: {dict(families)}", file=sys.stderr)
    rows = [Row("corpus: files", f"{len(entries)} in {len(families)} families", ">= 300",
                len(entries) >= 300)]  # fmt: skip
    details: dict[str, Any] = {"families": families, "machine": busy_note()}
    parts = args.parts.split(",")
    model = tiny_clip(work)
    if "library" in parts:
        print("(a) library ...", file=sys.stderr)
        tally = corpus_library.run_library(work, folder, model, args.seed)
        _print_tally("library", tally)
        rows += _rows_for("library", tally)
        rows.append(Row("corpus, library: errors keeping their traceback",
                        str(tally.with_traceback), "0", tally.with_traceback == 0))  # fmt: skip
        rows.append(
            Row(
                "corpus, library: damaged HEIC said to need pillow-heif (registered)",
                str(tally.misleading),
                "0",
                tally.misleading == 0,
            )
        )
        details["library"] = tally
    if "server" in parts:
        print("(b) server ...", file=sys.stderr)
        tallies, info = corpus_server.run_server(work, folder, model)
        fives = len(info["5xx"])
        rows.append(Row("corpus, server: 5xx answers", f"{fives} of "
                        f"{sum(t.items for t in tallies.values())} requests", "0", fives == 0))  # fmt: skip
        for route, tally in tallies.items():
            _print_tally(f"server, {route}", tally)
            rows += [r for r in _rows_for(f"server {route}", tally) if "embedded" not in r.check]
        rows.append(Row("corpus, server: alive after", "yes" if info["alive_after"] else "no",
                        "yes", info["alive_after"]))  # fmt: skip
        details["server"] = {"routes": tallies, **info}
    if "indexer" in parts:
        st_model = tiny_clip(work, layout="st")
        for store in args.stores.split(","):
            print(f"(c) indexer, {store} ...", file=sys.stderr)
            tally, info = corpus_indexer.run_indexer(work, folder, st_model, store)
            _print_tally(f"indexer, {store}", tally)
            for key, value in info.items():
                print(f"  {key}: {value}", file=sys.stderr)
            done = info.get("completed", False)
            said = "" if done else f": {' '.join(info.get('summary', []))[:120]}"
            rows.append(Row(f"corpus, indexer {store}: run completes",
                            f"{'yes' if done else 'no'} (exit {info.get('exit_codes')}){said}",
                            "yes", bool(done)))  # fmt: skip
            rows += _rows_for(f"indexer {store}", tally)
            rows.append(Row(f"corpus, indexer {store}: must-fail files not reported",
                            str(tally.unreported), "0", tally.unreported == 0))  # fmt: skip
            changes = info.get("second_run_changes")
            rows.append(Row(f"corpus, indexer {store}: changes on a second run", str(changes), "0",
                            changes == 0))  # fmt: skip
            details[f"indexer-{store}"] = {"tally": tally, **info}
    if "rss" in parts:
        print("(d) memory of a caller keeping every error ...", file=sys.stderr)
        rss = corpus_library.run_rss(
            work, folder, model, args.rss_rounds, args.big_count, args.big_size
        )
        details["rss"] = rss
        if "readings" in rss:
            growth = rss["readings"][-1] - rss["start"]
            print(f"  {rss}", file=sys.stderr)
            rows.append(Row(
                "corpus, library: RSS of a caller keeping every error",
                f"{rss['start']:.0f} -> {rss['readings'][-1]:.0f} MiB (+{growth:.0f}) over "
                f"{len(rss['readings'])} rounds of {rss['items']} items ({rss['big']} truncated "
                f"{args.big_size} JPEGs)", f"<= +{RSS_TARGET_MIB:.0f} MiB",
                growth <= RSS_TARGET_MIB))  # fmt: skip
        else:
            rows.append(Row("corpus, library: RSS of a caller keeping every error",
                            f"worker died: {rss}", f"<= +{RSS_TARGET_MIB:.0f} MiB", False))  # fmt: skip
    return rows, details


def main() -> None:
    if "--worker" in sys.argv:
        _worker(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--stores", default="sqlite,qdrant")
    parser.add_argument("--rss-rounds", type=int, default=6)
    parser.add_argument("--big-count", type=int, default=20, help="large truncated JPEGs")
    parser.add_argument("--big-size", default="5640x3172", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the corpus, models and logs here")
    parser.add_argument("--json", type=Path, help="write the rows and details here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="malformed-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o755)  # `nobody` reads the corpus and writes its index under here
        isolate_caches(work)
        try:
            rows, details = run(args, work)
        finally:
            if (work / "corpus").exists():
                corpus.make_removable(work / "corpus")
    print(f"\nMalformed corpus ({busy_note()})\n")
    print(markdown_table(rows))
    write_results(args.json, "malformed_corpus", rows, details)


if __name__ == "__main__":
    main()
