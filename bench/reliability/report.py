"""One table of the reliability figures: check, measured, target, met.

Each script's results come from RESULTS/<name>.json, what its `--json` wrote (RESULTS:
--results, by default $TMPDIR/handspring-reliability). Scripts named with --run are run
first, one at a time (they measure the machine), writing that file; a script without
--json has its printed table saved (RESULTS/<name>.md) and read back. A script that is
missing, or has no results and was not run, gets a "not run" row.

    python bench/reliability/report.py                           # read what is in RESULTS
    python bench/reliability/report.py --run all --quick         # run everything, small
    python bench/reliability/report.py --run ssrf_spellings,root_vanish --results out/
    python bench/reliability/ssrf_spellings.py --json out/ssrf_spellings.json   # by hand
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reliability.common import Row, markdown_table  # noqa: E402

HERE = ROOT / "bench" / "reliability"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the printed markdown table whose first header cell is `first_header`."""
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if line.startswith("|") and _cells(line)[0] == first_header:
            header = _cells(line)
            body = []
            for row in lines[at + 2 :]:
                if not row.startswith("|"):
                    break
                body.append(dict(zip(header, _cells(row), strict=False)))
            return body
    return []


def _number(text: str) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return float(match.group()) if match else None


def overload_rows(text: str) -> list[Row]:
    """The admission-controlled server's rows of overload.py's table, against issue 14's goals."""
    rows = []
    for r in markdown_rows(text, "server"):
        if not r["server"].startswith("new default"):
            continue
        factor = r["offered"].split("=")[0].strip()
        useful = next((_number(v) for k, v in r.items() if k.startswith("useful")), None)
        p99 = r.get("429 p50 / p99 ms", "-").split("/")[-1].strip()
        p99_ms = _number(p99) if p99 != "-" else None
        rows += [
            Row(f"overload {factor}: useful throughput", f"{useful:.0f}% of capacity"
                if useful is not None else "?", ">= 90%", useful is not None and useful >= 90),
            Row(f"overload {factor}: 429 p99", f"{p99} ms" if p99_ms is not None else "no 429",
                "< 50 ms", p99_ms is None or p99_ms < 50),
            Row(f"overload {factor}: failed requests", r.get("failed", "?"), "0",
                r.get("failed") == "0"),
        ]  # fmt: skip
    return rows


def kill_resume_rows(text: str) -> list[Row]:
    rows = []
    for r in markdown_rows(text, "store"):
        store, kills = r["store"], r.get("kills", "?")
        lost, dup = r.get("lost", "?"), r.get("duplicated", "?")
        rows += [
            Row(f"SIGKILL x {kills} during indexing ({store}): lost + duplicated",
                f"{lost} + {dup}", "0", lost == "0" and dup == "0"),
            Row(f"SIGKILL during indexing ({store}): integrity_check",
                r.get("integrity_check", "?"), "ok", r.get("integrity_check") in ("ok", "n/a")),
            Row(f"SIGKILL during indexing ({store}): missing after a last run",
                r.get("missing after the last run", "?"), "0",
                r.get("missing after the last run") == "0"),
            Row(f"SIGKILL during indexing ({store}): indexed after the kills",
                r.get("indexed after the kills", "?"), "-", None),
        ]  # fmt: skip
    return rows


@dataclass(frozen=True)
class Script:
    name: str
    quick: tuple[str, ...]  # arguments for a run of a few minutes
    parse_output: Callable[[str], list[Row]] | None = None  # for a script without --json

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.py"

    def writes_json(self) -> bool:
        return "--json" in self.path.read_text()


SCRIPTS = (
    Script("malformed_corpus", ()),
    Script("ssrf_spellings", ()),
    Script("overload", ("--seconds", "4", "--capacity-seconds", "4"), overload_rows),
    Script("soak", ("--requests", "10000", "--every", "2500", "--model", "tiny")),
    Script("kill_resume", ("--photos", "80", "--kills", "12", "--size", "2400x1800"),
           kill_resume_rows),
    Script("root_vanish", ()),
    Script("schema_fuzz", ("--quick",)),
)  # fmt: skip


def rows_from_json(document: dict) -> list[Row]:
    """Our scripts' {"rows": [...]}, or a one-check document {"name", "measured", ...}."""
    if "rows" in document:
        return [Row(**{k: r.get(k) for k in ("check", "measured", "target", "met")})
                for r in document["rows"]]  # fmt: skip
    return [Row(document.get("name", "?"), str(document.get("measured", "?")),
                str(document.get("target", "-")), document.get("met"))]  # fmt: skip


def run_script(script: Script, results: Path, quick: bool) -> None:
    argv = [sys.executable, str(script.path), *(script.quick if quick else ())]
    print(f"running {script.name} ...", file=sys.stderr)
    if script.writes_json():
        subprocess.run([*argv, "--json", str(results / f"{script.name}.json")], check=False)
        return
    done = subprocess.run(argv, check=False, stdout=subprocess.PIPE, text=True)
    (results / f"{script.name}.md").write_text(done.stdout)
    print(done.stdout)


def collect(script: Script, results: Path) -> list[Row]:
    not_run = [Row(script.name, "not run", "-", None)]
    if not script.path.exists():
        return [Row(script.name, f"not run: bench/reliability/{script.name}.py does not exist",
                    "-", None)]  # fmt: skip
    saved_json, saved_md = results / f"{script.name}.json", results / f"{script.name}.md"
    if saved_json.exists():
        return rows_from_json(json.loads(saved_json.read_text()))
    if saved_md.exists() and script.parse_output is not None:
        return script.parse_output(saved_md.read_text()) or [
            Row(script.name, "its output has no table (did it fail?)", "-", False)
        ]
    return not_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results", type=Path, default=Path(tempfile.gettempdir()) / "handspring-reliability"
    )
    parser.add_argument("--run", default="", help="'all', or script names, comma-separated")
    parser.add_argument("--quick", action="store_true", help="each script at a small size")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    wanted = (
        {s.name for s in SCRIPTS} if args.run == "all" else set(filter(None, args.run.split(",")))
    )
    unknown = wanted - {s.name for s in SCRIPTS}
    if unknown:
        raise SystemExit(f"unknown scripts: {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    for script in SCRIPTS:
        if script.name in wanted and script.path.exists():
            for stale in (args.results / f"{script.name}.json", args.results / f"{script.name}.md"):
                stale.unlink(missing_ok=True)
            run_script(script, args.results, args.quick)
        rows += collect(script, args.results)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
