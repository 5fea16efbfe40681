"""schemathesis against a live `handspring serve`'s own OpenAPI document, every operation,
valid (positive) and invalid (negative) requests, counting rather than stopping at the
first failure.

The server (its own process, on loopback) hosts every kind of model the contracts use:
a tiny random CLIP (images, texts), the real all-MiniLM-L6-v2 (texts), and tiny random
reranker, 3-label classifier and SPLADE models (TEI's /rerank, /predict, /embed_sparse),
with --max-items 16 and --max-text-chars 2000, as tests/server/test_openapi_fuzz.py.

Counted per operation: cases sent, answers by status class, 5xx that are not a
contract's own (Weaviate answers bad input with 500 {"error"}), responses that break
the document (undocumented status, content type, headers or body schema), invalid
requests accepted (negative_data_rejection: the schema and the code disagree), no
answer at all, and the server log's "unexpected error" lines. schemathesis's
positive_data_acceptance is left out: a schema-valid string that is not an image is
rightly refused.

    python bench/reliability/schema_fuzz.py                       # 1000 per operation and mode
    python bench/reliability/schema_fuzz.py --max-examples 200    # fewer
    python bench/reliability/schema_fuzz.py --quick               # 25: a look in a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reliability.common import (  # noqa: E402
    Row,
    busy_note,
    isolate_caches,
    markdown_table,
    served,
    tiny_clip,
    write_results,
)

WEAVIATE_PATHS = ("/vectorize", "/vectors", "/meta")
SCHEMA_CHECKS = (
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
QUICK_EXAMPLES = 25
CALL_TIMEOUT_S = 120.0


@dataclass
class OperationTally:
    cases: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "2xx": n
    server_errors: int = 0  # 5xx that no contract documents
    contract_500: int = 0  # Weaviate's documented 500 {"error"}
    schema_violations: int = 0
    accepted_invalid: int = 0  # negative cases answered 2xx
    valid_on_the_wire: int = 0  # negative multipart cases whose parts, sent, are valid
    no_answer: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # check's title: n
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


def _models(work: Path) -> tuple[list[str], list[str]]:
    """The `--model` values and the flags that make them the contracts' defaults."""
    from tests.server.tei_fixtures import CLASSIFIER_LABELS
    from tests.support.task_checkpoints import write_cross_encoder, write_splade

    folders = work / "tei-models"
    reranker, classifier, splade = (folders / n for n in ("reranker", "classifier", "splade"))
    if not (reranker / "config.json").exists():
        write_cross_encoder(reranker, "bert", layout="st", seed=1)
        write_cross_encoder(classifier, "xlm-roberta", CLASSIFIER_LABELS, seed=2)
        write_splade(splade, "bert", layout="st", seed=3)
    models = [
        f"clip={tiny_clip(work)}:fp32",
        "minilm=all-minilm-l6-v2:fp32",
        f"reranker={reranker}:fp32",
        f"classifier={classifier}:fp32",
        f"splade={splade}:fp32",
    ]
    flags = ["--default-rerank-model", "reranker", "--default-sparse-model", "splade"]
    flags += ["--default-text-model", "minilm", "--default-image-model", "clip"]
    return models, [*flags, "--max-items", "16", "--max-text-chars", "2000"]


def fuzz_operation(operation: Any, mode: Any, examples: int, tally: OperationTally) -> None:
    import requests
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import checks
    from schemathesis.core.failures import Failure, FailureGroup

    chosen = [getattr(checks, name) for name in SCHEMA_CHECKS]
    negative = mode.value == "negative"
    if negative:
        chosen.append(checks.negative_data_rejection)
    weaviate = operation.path in WEAVIATE_PATHS
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    def one(case: Any) -> None:
        tally.cases += 1
        try:
            response = case.call(session=session, timeout=CALL_TIMEOUT_S)
        except requests.RequestException as exc:
            tally.no_answer += 1
            tally.note(f"no answer: {exc!r}")
            return
        status = response.status_code
        kind = f"{status // 100}xx"
        tally.statuses[kind] = tally.statuses.get(kind, 0) + 1
        if status >= 500:
            if weaviate and status == 500 and _error_body(response):
                tally.contract_500 += 1
            else:
                tally.server_errors += 1
                tally.note(f"{status}: {response.text[:200]} <- sent {_sent(case)}")
        checks_here = chosen
        if negative and _valid_on_the_wire(case):
            tally.valid_on_the_wire += 1
            checks_here = [c for c in chosen if c is not checks.negative_data_rejection]
        try:
            case.validate_response(response, checks=checks_here)
        except (FailureGroup, Failure) as raised:
            found = raised.exceptions if isinstance(raised, FailureGroup) else [raised]
            for failure in found:
                title = getattr(failure, "title", None) or type(failure).__name__
                tally.failures[title] = tally.failures.get(title, 0) + 1
                if "accepted" in title.lower() or "rejection" in title.lower():
                    tally.accepted_invalid += 1
                else:
                    tally.schema_violations += 1
                message = " ".join(str(failure).split())
                tally.note(f"{title}: {message[:240]} <- answered {status} "
                           f"{response.text[:160]} <- sent {_sent(case)}")  # fmt: skip

    try:
        one()
    except Unsatisfiable:  # nothing to vary (no parameters, no body): no invalid request
        tally.note(f"{mode.value}: no case can be generated")


# The texts a form field of these types is read from (pydantic's, as FastAPI reads forms).
_FORM_BOOLEANS = {"0": False, "off": False, "f": False, "false": False, "n": False, "no": False,
                  "1": True, "on": True, "t": True, "true": True, "y": True, "yes": True}  # fmt: skip


def _valid_on_the_wire(case: Any) -> bool:
    """Whether a multipart case is invalid only in what its parts cannot carry: every part
    is text or bytes, so files of numbers send what a text file would, `0` for a boolean
    is the text a form sends for false, and parts the form does not name are ignored. Its
    parts are checked as sent: scalars as their text (read as the field's type), an empty
    text as a field not given (as FastAPI reads it), a list's null as an empty part, and
    an empty list as no part at all."""
    if case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return False
    schema = next(b for b in case.operation.body if b.media_type == case.media_type)
    definition = schema.definition["schema"]
    fields = definition.get("properties", {})
    sent: dict[str, Any] = {}
    for name, value in case.body.items():
        if isinstance(value, list):
            texts = ["" if v is None else str(v) for v in value]
        else:
            texts = [] if value is None or value == "" else [str(value)]
        if name not in fields:
            if definition.get("additionalProperties") is False and texts:
                return False
            continue
        if fields[name].get("type") == "array":
            if texts:
                sent[name] = texts
        elif len(texts) == 1:
            sent[name] = _form_value(texts[0], fields[name])
        elif texts:  # several parts for one field: not valid however sent
            return False
    return schema.is_valid(sent)


def _form_value(text: str, field: dict[str, Any]) -> Any:
    """A form field's text as FastAPI reads it into the field's type (else the text)."""
    kind = field.get("type")
    if kind == "boolean":
        return _FORM_BOOLEANS.get(text.strip().lower(), text)
    if kind in ("integer", "number"):
        try:
            return int(text) if kind == "integer" else float(text)
        except ValueError:
            return text
    return text


def _sent(case: Any) -> str:
    """What a case sent, short: its media type, query and body."""
    parts = [case.media_type or "", repr(case.query) if case.query else "", repr(case.body)]
    return " ".join(p for p in parts if p)[:300]


def _error_body(response: Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, OperationTally], int, float]:
    import schemathesis

    models, flags = _models(work)
    tallies: dict[str, OperationTally] = {}
    modes = [schemathesis.GenerationMode(m) for m in args.modes.split(",")]
    started = time.perf_counter()
    with served(work, models, flags, name="fuzz-server") as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        if args.only:
            wanted = {o.strip() for o in args.only.split(",")}
            operations = [o for o in operations if f"{o.method.upper()} {o.path}" in wanted]
        print(f"{len(operations)} operations x {len(modes)} modes x up to "
              f"{args.max_examples} cases", file=sys.stderr)  # fmt: skip
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            tally = tallies.setdefault(label, OperationTally())
            for mode in modes:
                began = time.perf_counter()
                fuzz_operation(operation, mode, args.max_examples, tally)
                print(f"  {label} {mode.value}: {tally.cases} cases so far, "
                      f"{time.perf_counter() - began:.0f} s", file=sys.stderr)  # fmt: skip
        alive = server.process is not None and server.process.poll() is None
    log = (work / "fuzz-server.log").read_text(errors="replace")
    internal = log.count("unexpected error")
    if not alive:
        internal += 1_000_000  # impossible to miss in the table
    return tallies, internal, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-examples", type=int, default=1000, help="per operation and mode")
    parser.add_argument("--quick", action="store_true", help=f"--max-examples {QUICK_EXAMPLES}")
    parser.add_argument("--modes", default="positive,negative")
    parser.add_argument("--only", default="", help='operations, e.g. "POST /decode,GET /info"')
    parser.add_argument("--work", type=Path, help="keep the models and the server log here")
    parser.add_argument("--json", type=Path, help="write the rows and details here")
    args = parser.parse_args()
    if args.quick:
        args.max_examples = QUICK_EXAMPLES
    with tempfile.TemporaryDirectory(prefix="schema-fuzz-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        isolate_caches(work)
        tallies, internal, seconds = run(args, work)
    print(f"\nschemathesis, {args.modes} ({busy_note()}, {seconds:.0f} s)\n")
    print("| operation | cases | 2xx / 4xx / 5xx | 5xx (not a contract's) | schema violations "
          "| invalid accepted | no answer |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, t in tallies.items():
        classes = " / ".join(str(t.statuses.get(c, 0)) for c in ("2xx", "4xx", "5xx"))
        print(f"| {label} | {t.cases} | {classes} | {t.server_errors} | {t.schema_violations} "
              f"| {t.accepted_invalid} | {t.no_answer} |")  # fmt: skip
    for label, t in tallies.items():
        for text in t.examples:
            print(f"  {label}: {text}", file=sys.stderr)
    total = sum(t.cases for t in tallies.values())
    least = min((t.cases for t in tallies.values() if t.cases > 1), default=0)
    fives = sum(t.server_errors for t in tallies.values())
    violations = sum(t.schema_violations for t in tallies.values())
    accepted = sum(t.accepted_invalid for t in tallies.values())
    wire_valid = sum(t.valid_on_the_wire for t in tallies.values())
    silent = sum(t.no_answer for t in tallies.values())
    rows = [
        Row("schemathesis: cases", f"{total:,} over {len(tallies)} operations (fewest, where "
            f"inputs vary: {least:,})", ">= 1,000 per operation", least >= 1000),
        Row("schemathesis: 5xx (not a contract's own) + internal errors logged",
            f"{fives} + {internal}", "0", fives + internal == 0),
        Row("schemathesis: responses breaking the OpenAPI document", str(violations), "0",
            violations == 0),
        Row("schemathesis: invalid requests accepted (schema and code disagree)",
            f"{accepted} (not counted: {wire_valid} multipart cases valid as sent)", "0",
            accepted == 0),
        Row("schemathesis: requests with no answer", str(silent), "0", silent == 0),
    ]  # fmt: skip
    print()
    print(markdown_table(rows))
    write_results(args.json, "schema_fuzz", rows, {"operations": tallies, "seconds": seconds})


if __name__ == "__main__":
    main()
