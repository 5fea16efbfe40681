"""Deletion safety: what `handspring photos index` deletes when a library looks gone or
shrunk (a disk unmounted, remounted onto the wrong folder, a link whose target vanished),
on both stores, run as a subprocess as a user would.

A library of 30 photos (a/ 10, b/ 10, and trip/ 10 through a symlink to a folder outside
the root, indexed with --follow-external-links) is indexed once per store; each case
starts from a copy of that library and index, changes the library, runs `photos index`
without --allow-deletions, and counts the photos whose rows are gone. Cases where
deleting is wrong must delete nothing; the two control cases (ordinary deletions within
the limits) must delete exactly what was deleted. Where deletions were held back, a run
with --allow-deletions (--allow-empty-root for the emptied root) shows the confirmation
applies them.

    python bench/reliability/root_vanish.py [--stores sqlite,qdrant] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reliability.common import (  # noqa: E402
    Row,
    bench_env,
    busy_note,
    isolate_caches,
    markdown_table,
    tiny_clip,
    write_results,
)

PER_FOLDER = 10
LIBRARY = 3 * PER_FOLDER
# The CLI's lines worth showing: what it held, refused or could not reach.
TELLING = ("held", "refused", "missing root", "cannot list", "unreadable", "indexed files",
           "error:", "symlink")  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[Path, Path], None]  # (root, outside) -> None
    should_delete: int  # 0 unless the deletions are real and within the limits
    confirm: tuple[str, ...] = ()  # the flag that applies what was held, if any
    confirmed_delete: int = 0


@dataclass
class Outcome:
    case: str
    store: str
    exit_code: int
    deleted: int
    should_delete: int
    said: list[str] = field(default_factory=list)
    confirmed: int | None = None  # deleted by the run with the confirming flag
    confirmed_should: int = 0
    output: str = ""


def _photos(folder: Path, count: int, first_seed: int) -> None:
    from tests.support.photo_library import age, write_photo

    for i in range(count):
        age(write_photo(folder / f"p{first_seed + i:02d}.jpg", seed=first_seed + i), i)


def _delete(folder: Path, count: int) -> None:
    for path in sorted(folder.glob("*.jpg"))[:count]:
        path.unlink()


def _replaced_by_one_photo(root: Path, outside: Path) -> None:
    shutil.move(root, root.with_name("the right disk"))
    _photos(root / "a", 1, first_seed=100)  # the wrong disk: one photo, where p00 was...
    (root / "a" / "p100.jpg").rename(root / "a" / "p00.jpg")  # ...under a known name


def _emptied(root: Path, outside: Path) -> None:
    for child in root.iterdir():
        if child.is_symlink():
            child.unlink()
        else:
            shutil.rmtree(child)


def _vanished(root: Path, outside: Path) -> None:
    shutil.rmtree(root)


def _dangling_root(root: Path, outside: Path) -> None:
    shutil.rmtree(root)
    root.symlink_to("/mnt/unplugged-usb/photos")  # the disk behind the link is gone


def _link_target_gone(root: Path, outside: Path) -> None:
    shutil.rmtree(outside)


def _subfolder_gone(root: Path, outside: Path) -> None:
    shutil.rmtree(root / "b")


def _subfolder_now_a_file(root: Path, outside: Path) -> None:
    shutil.rmtree(root / "b")
    (root / "b").write_text("not a folder any more")


def _photo_now_a_dangling_link(root: Path, outside: Path) -> None:
    photo = root / "a" / "p00.jpg"
    photo.unlink()
    photo.symlink_to("/mnt/unplugged-usb/p00.jpg")


def _photo_now_a_link_loop(root: Path, outside: Path) -> None:
    photo = root / "a" / "p00.jpg"
    photo.unlink()
    photo.symlink_to(photo.name)  # ELOOP, where a dangling link is ENOENT


def _subtree_link_now_a_loop(root: Path, outside: Path) -> None:
    link = root / "trip"
    link.unlink()
    link.symlink_to(link.name)


def _shrink(count_a: int, count_b: int) -> Callable[[Path, Path], None]:
    def change(root: Path, outside: Path) -> None:
        _delete(root / "a", count_a)
        _delete(root / "b", count_b)

    return change


CASES = (
    Case("root replaced by a folder of 1 photo", _replaced_by_one_photo, 0,
         ("--allow-deletions",), LIBRARY - 1),
    Case("root emptied", _emptied, 0, ("--allow-empty-root",), LIBRARY),
    Case("root vanished", _vanished, 0),
    Case("root a dangling symlink (disk unplugged)", _dangling_root, 0),
    Case("symlinked subtree's target vanished (--follow-external-links)", _link_target_gone, 0,
         ("--allow-deletions",), PER_FOLDER),
    Case("a subfolder vanished", _subfolder_gone, 0, ("--allow-deletions",), PER_FOLDER),
    Case("a subfolder replaced by a file", _subfolder_now_a_file, 0, ("--allow-deletions",),
         PER_FOLDER),
    Case("the subtree's symlink now a link loop", _subtree_link_now_a_loop, 0,
         ("--allow-deletions",), PER_FOLDER),
    Case("a photo replaced by a dangling symlink", _photo_now_a_dangling_link, 0),
    Case("a photo replaced by a symlink loop", _photo_now_a_link_loop, 0),
    Case("shrink over the threshold (16 of 30 deleted)", _shrink(8, 8), 0,
         ("--allow-deletions",), 16),
    Case("control: shrink at the threshold (15 of 30)", _shrink(8, 7), 15),
    Case("control: 3 photos deleted", _shrink(2, 1), 3),
)  # fmt: skip


class Bench:
    def __init__(self, work: Path, store: str, model: Path) -> None:
        self.work = work / store
        self.store = store
        self.model = model
        self.root = self.work / "photos"
        self.outside = self.work / "usb" / "trip"
        self.index = self.work / "index"
        self.template = self.work / "template"

    @property
    def url(self) -> str:
        if self.store == "sqlite":
            return f"sqlite://{self.index / 'photos.db'}"
        return f"qdrant://{self.index / 'q'}"

    def run(self, *flags: str) -> tuple[int, str]:
        command = [sys.executable, "-m", "handspring.photos.cli", "index", str(self.root),
                   "--db", self.url, "--image-model", str(self.model), "--no-progress",
                   "--follow-external-links", *flags]  # fmt: skip
        done = subprocess.run(
            command, env=bench_env(self.work.parent), capture_output=True, text=True, timeout=600
        )
        return done.returncode, done.stderr + done.stdout

    def paths(self) -> set[str]:
        from handspring.photos.stores.store import open_store

        store = open_store(self.url, read_only=True)
        try:
            return {f.path for f in store.files_under([str(self.root)])}
        finally:
            store.close()

    def prepare_template(self) -> None:
        """The library and its index, once: every case starts from copies."""
        for folder in (self.root, self.outside.parent, self.index):
            shutil.rmtree(folder, ignore_errors=True)
        _photos(self.root / "a", PER_FOLDER, 0)
        _photos(self.root / "b", PER_FOLDER, PER_FOLDER)
        _photos(self.outside, PER_FOLDER, 2 * PER_FOLDER)
        (self.root / "trip").symlink_to(self.outside, target_is_directory=True)
        self.index.mkdir(parents=True)
        code, output = self.run()
        if code != 0 or len(self.paths()) != LIBRARY:
            raise RuntimeError(f"indexing the template failed ({code}):\n{output}")
        shutil.rmtree(self.template, ignore_errors=True)
        self.template.mkdir()
        for folder in (self.root, self.outside.parent, self.index):
            shutil.copytree(folder, self.template / folder.name, symlinks=True)

    def restore(self) -> None:
        for folder in (self.root, self.outside.parent, self.index):
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            else:
                shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(self.template / folder.name, folder, symlinks=True)
        shutil.rmtree(self.work / "the right disk", ignore_errors=True)

    def case(self, case: Case) -> Outcome:
        self.restore()
        before = self.paths()
        case.change(self.root, self.outside)
        code, output = self.run()
        after = self.paths()
        said = [line.strip() for line in output.splitlines() if any(w in line for w in TELLING)]
        outcome = Outcome(case.name, self.store, code, len(before - after), case.should_delete,
                          said, output=output)  # fmt: skip
        if case.confirm:
            self.run(*case.confirm)
            outcome.confirmed = len(before - self.paths())
            outcome.confirmed_should = case.confirmed_delete
        return outcome


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| case | store | exit | deleted | should | with the confirming flag | what the CLI said |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        confirmed = "-" if o.confirmed is None else f"{o.confirmed} of {o.confirmed_should}"
        said = "; ".join(o.said)[:300].replace("|", "/") or "(nothing)"
        lines.append(
            f"| {o.case} | {o.store} | {o.exit_code} | {o.deleted} | {o.should_delete} "
            f"| {confirmed} | {said} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,qdrant")
    parser.add_argument("--work", type=Path, help="keep the libraries and indexes here")
    parser.add_argument("--json", type=Path, help="write the rows and details here")
    args = parser.parse_args()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="root-vanish-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        isolate_caches(work)
        model = tiny_clip(work, layout="st")
        for store in args.stores.split(","):
            bench = Bench(work, store, model)
            print(f"{store}: indexing the library ...", file=sys.stderr)
            bench.prepare_template()
            for case in CASES:
                outcomes.append(bench.case(case))
                o = outcomes[-1]
                print(f"  {case.name}: exit {o.exit_code}, {o.deleted} deleted", file=sys.stderr)
    wrongly = [o for o in outcomes if o.should_delete == 0]
    unwanted = sum(o.deleted for o in wrongly)
    controls = [o for o in outcomes if o.should_delete > 0]
    controls_ok = sum(o.deleted == o.should_delete for o in controls)
    confirmed = [o for o in outcomes if o.confirmed is not None]
    confirmed_ok = sum(o.confirmed == o.confirmed_should for o in confirmed)
    silent = [o for o in wrongly if not o.said]
    rows = [
        Row("root vanish: photos deleted without --allow-deletions",
            f"{unwanted} over {len(wrongly)} cases x stores", "0", unwanted == 0),
        Row("root vanish: cases where nothing was said", str(len(silent)), "0", not silent),
        Row("root vanish: ordinary deletions within the limits applied",
            f"{controls_ok} of {len(controls)}", "all", controls_ok == len(controls)),
        Row("root vanish: held deletions applied with the confirming flag",
            f"{confirmed_ok} of {len(confirmed)}", "all", confirmed_ok == len(confirmed)),
    ]  # fmt: skip
    print(f"\nRoot vanish: {LIBRARY} photos, `photos index` as a subprocess ({busy_note()})\n")
    print(table(outcomes))
    print()
    print(markdown_table(rows))
    write_results(args.json, "root_vanish", rows, {"cases": outcomes})


if __name__ == "__main__":
    main()
