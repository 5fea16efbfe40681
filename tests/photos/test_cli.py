"""`handspring photos index | search | status` through click's test runner: what
they print on stdout (results) and stderr (summaries), and their exit status."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from handspring.photos.cli import photos
from tests.photos.conftest import PhotoModels
from tests.support.photo_library import Library, build_library


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(photos, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def cli_library(
    tmp_path_factory: pytest.TempPathFactory, photo_models: PhotoModels
) -> tuple[Library, str]:
    """A library indexed through the command line, at the default precision ("auto": fp32
    for a model the catalog has no int8 gate for)."""
    root = tmp_path_factory.mktemp("cli")
    library = build_library(root / "photos", with_heic=False)
    db = str(root / "index.db")
    result = _invoke("index", str(library.root), "--db", db, "-m", str(photo_models.image))
    assert result.exit_code == 0, result.output
    summary = result.stderr
    assert f"{len(library.photos)} added" in summary
    assert f"{len(library.broken)} could not be read" in summary
    assert "folders reached twice (symlink loops or aliases)" in summary
    for name in library.broken:
        assert f"error: {library.root / name}: " in summary
    return library, db


def test_index_again_and_status(
    cli_library: tuple[Library, str], photo_models: PhotoModels
) -> None:
    library, db = cli_library
    again = _invoke("index", str(library.root), "--db", db)  # the index's model by default
    assert again.exit_code == 0
    assert f"{len(library.photos) + len(library.broken)} unchanged" in again.stderr
    status = _invoke("status", "--db", db, "--errors")
    assert status.exit_code == 0
    lines = status.stdout.splitlines()
    assert re.fullmatch(rf"index        {re.escape(db)} \(SQLite, [\d.]+ [kMG]B\)", lines[0]), (
        lines[0]
    )
    assert lines[1] == f"photos       {len(library.photos)} searchable"
    assert lines[2] == f"image model  {photo_models.image} (40-d, fp32)"
    assert re.fullmatch(r"last change  \d{4}-\d\d-\d\d \d\d:\d\d \(.+\)", lines[3]), lines[3]
    unchanged = len(library.photos) + len(library.broken)
    assert re.fullmatch(
        rf"last run     \d{{4}}-\d\d-\d\d \d\d:\d\d \(.+\), took \d\d:\d\d: "
        rf"{unchanged} unchanged",
        lines[4],
    ), lines[4]
    assert lines[5] == f"unreadable   {len(library.broken)} files"
    assert f"  {library.root / 'broken/empty.png'}: empty file (0 bytes)" in lines[6:]
    assert "SqliteStore(" not in status.stdout


def test_search_outputs(cli_library: tuple[Library, str], photo_models: PhotoModels) -> None:
    library, db = cli_library
    base = ("search", "--db", db, "--text-model", str(photo_models.text))
    as_json = _invoke(*base, "a dog on the beach", "-k", "5", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    hits = json.loads(as_json.stdout)
    assert len(hits) == 5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(hits[0]) == {
        "id",
        "score",
        "path",
        "taken_at",
        "width",
        "height",
        "size",
        "gps",
        "sha256",
    }

    paths = _invoke(*base, "a dog on the beach", "-k", "5", "--format", "paths")
    assert paths.stdout.splitlines() == [h["path"] for h in hits]
    page = _invoke(*base, "a dog on the beach", "-k", "2", "--offset", "3", "--format", "paths")
    assert page.stdout.splitlines() == [h["path"] for h in hits[3:5]]

    table = _invoke(*base, "a dog on the beach", "-k", "3").stdout.splitlines()
    assert re.fullmatch(r"score +id +taken +size +path", table[0])
    for line, hit in zip(table[1:], hits, strict=False):
        assert line.startswith(f"{hit['score']:.3f}") and line.endswith(hit["path"])
    beach = library.path("2023/beach.jpg")  # as an example photo, it finds itself first
    (row,) = _invoke(*base, str(beach), "-k", "1").stdout.splitlines()[1:]
    assert re.fullmatch(rf"1\.000 +\d+ +2023-07-04 15:30 +64x48 +{re.escape(str(beach))}", row)


def test_search_filters_and_query_forms(
    cli_library: tuple[Library, str], photo_models: PhotoModels
) -> None:
    library, db = cli_library
    base = ("search", "--db", db, "--text-model", str(photo_models.text), "--format", "json")

    def paths(*args: str) -> list[str]:
        result = _invoke(*base, *args)
        assert result.exit_code == 0, result.output
        return [
            Path(h["path"]).relative_to(library.root).as_posix() for h in json.loads(result.stdout)
        ]

    assert sorted(paths("sea", "--on-this-day", "07-04")) == [
        "2021/IMG_20210704_101500.jpg",
        "2023/beach.jpg",
        "2023/modified_only.png",
        "2023/rotated.jpg",
    ]
    assert sorted(paths("sea", "--from", "2023-07-04", "--to", "2023-07-31")) == [
        "2023/beach.jpg",
        "2023/rotated.jpg",
    ]
    assert all(p.startswith("misc/") for p in paths("sea", "--folder", str(library.root / "misc")))
    beach_id = json.loads(_invoke(*base, str(library.path("2023/beach.jpg")), "-k", "1").stdout)[0][
        "id"
    ]
    similar = paths("--similar", str(beach_id), "-k", "20")
    assert "2023/beach.jpg" not in similar and len(similar) == len(library.photos) - 1
    assert paths(f"#{beach_id}", "-k", "20") == similar  # the same question, the same answer
    combined = paths("2:sea", "-a", "golden sand", "-s", f"#{beach_id}", "-k", "3")
    assert len(combined) == 3


def test_errors_are_clean_messages(
    cli_library: tuple[Library, str], photo_models: PhotoModels, tmp_path: Path
) -> None:
    library, db = cli_library
    empty = _invoke("search", "cat", "--db", str(tmp_path / "none.db"))
    assert empty.exit_code == 1 and "no photo index here" in empty.stderr
    unknown = _invoke("search", "--similar", "424242", "--db", db)
    assert unknown.exit_code == 1 and "photo 424242 is not indexed" in unknown.stderr
    for beyond in (["--similar", str(2**63)], [f"cat + #{2**63}"]):  # past SQLite's INTEGER
        huge = _invoke("search", *beyond, "--db", db)
        assert huge.exit_code == 1, huge.output
        assert f"photo {2**63} is not indexed" in huge.stderr
    both = _invoke("search", "cat", "--similar", "1", "--db", db)
    assert both.exit_code == 2 and "--similar takes no query terms" in both.stderr
    day = _invoke("search", "cat", "--on-this-day", "13-45", "--db", db)
    assert day.exit_code == 2 and "expected YYYY-MM-DD or MM-DD" in day.stderr
    mixed = _invoke("index", str(library.root), "--db", db, "--image-model", "st-clip-vit-b-32")
    assert mixed.exit_code == 1 and "One index never mixes models" in mixed.stderr
    bad_url = _invoke("status", "--db", "mysql://x/y")
    assert bad_url.exit_code == 1 and "unknown store URL" in bad_url.stderr


def test_a_missing_root_exits_1_and_deletes_nothing(
    photo_models: PhotoModels, tmp_path: Path
) -> None:
    library = build_library(tmp_path / "photos", with_heic=False)
    db = str(tmp_path / "index.db")
    assert (
        _invoke(
            "index", str(library.root), "--db", db, "--image-model", str(photo_models.image)
        ).exit_code
        == 0
    )
    shutil.move(library.root, tmp_path / "elsewhere")
    result = _invoke("index", str(library.root), "--db", db)
    assert result.exit_code == 1
    assert f"missing root: {library.root}" in result.stderr
    assert "0 deleted" in result.stderr
    status = _invoke("status", "--db", db)
    assert f"photos       {len(library.photos)} searchable" in status.stdout


def test_the_qdrant_store_through_the_command_line(
    photo_models: PhotoModels, tmp_path: Path
) -> None:
    library = build_library(tmp_path / "photos", with_heic=False)
    url = f"qdrant://{tmp_path / 'qdrant'}"
    indexed = _invoke(
        "index", str(library.root), "--db", url, "--image-model", str(photo_models.image)
    )
    assert indexed.exit_code == 0 and f"{len(library.photos)} added" in indexed.stderr
    beach = library.path("2023/beach.jpg")
    found = _invoke("search", str(beach), "--db", url, "-k", "2", "--format", "paths")
    assert found.exit_code == 0 and found.stdout.splitlines()[0] == str(beach)
    status = _invoke("status", "--db", url)
    assert f"photos       {len(library.photos)} searchable" in status.stdout
    assert "(Qdrant (embedded), " in status.stdout


# ------------------------------------------------------------------ browsing and duplicates


def test_list_newest_first_with_filters(cli_library: tuple[Library, str]) -> None:
    library, db = cli_library

    def listed(*args: str) -> list[dict]:
        result = _invoke("list", "--db", db, "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    everything = listed()
    assert len(everything) == len(library.photos)
    dated = [p for p in everything if p["taken_at"]]
    undated = everything[len(dated) :]
    assert all(p["taken_at"] is None for p in undated)  # undated photos last
    assert [p["taken_at"] for p in dated] == sorted((p["taken_at"] for p in dated), reverse=True)
    assert listed("-k", "3") == everything[:3]
    july = listed("--on-this-day", "07-04")
    assert {p["taken_at"][5:10] for p in july} == {"07-04"} and len(july) == 4
    misc = str(library.root / "misc")
    assert all(p["path"].startswith(misc + "/") for p in listed("--folder", misc))
    # The table: aligned columns, the path last; a date filter says what it leaves out.
    table = _invoke("list", "--db", db, "--from", "2023-01-01")
    lines = table.stdout.splitlines()
    assert re.fullmatch(r"id +taken +pixels +size +path", lines[0])
    assert all(
        re.fullmatch(r"\d+ +202\d-\d\d-\d\d \d\d:\d\d +\d+x\d+ +\d+ kB +/.+\.\w+", line)
        for line in lines[1:]
    ), lines
    assert f"({len(undated)} photos without a date left out by the date filters)" in table.stderr
    # `search --on-this-day` alone lists the same photos as `list --on-this-day`.
    alone = _invoke("search", "--db", db, "--on-this-day", "07-04", "--format", "json")
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.stdout) == july


def test_duplicates_lists_groups_and_deletes_nothing(
    photo_models: PhotoModels, tmp_path: Path
) -> None:
    library = build_library(tmp_path / "photos", with_heic=False)
    beach = library.path("2023/beach.jpg")
    copy = beach.parent / "beach copy.jpg"
    shutil.copy(beach, copy)  # a byte-identical copy: the same vector
    db = str(tmp_path / "index.db")
    assert (
        _invoke("index", str(library.root), "--db", db, "-m", str(photo_models.image)).exit_code
        == 0
    )
    files = sorted(p for p in library.root.rglob("*") if p.is_file())
    result = _invoke("duplicates", "--db", db, "--threshold", "0.9999", "--format", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    groups = [sorted(p["path"] for p in g["photos"]) for g in found["groups"]]
    assert sorted([str(beach), str(copy)]) in groups
    assert found["threshold"] == 0.9999 and found["photos_compared"] == len(library.photos) + 1
    table = _invoke("duplicates", "--db", db, "--threshold", "0.9999").stdout.splitlines()
    assert table[0].endswith("at similarity >= 0.9999; nothing was deleted.")
    assert re.fullmatch(r"group 1: \d+ photos, similarity [\d.-]+", table[2])
    assert re.fullmatch(r"  id +taken +pixels +size +path", table[3])
    assert sorted(p for p in library.root.rglob("*") if p.is_file()) == files  # all still there


# ------------------------------------------------------------------ one command line


def test_model_option_spellings(
    cli_library: tuple[Library, str], photo_models: PhotoModels
) -> None:
    library, db = cli_library
    help_text = _invoke("index", "--help").stdout
    assert "-m, --model MODEL" in help_text and "--image-model" not in help_text  # hidden alias
    both = _invoke("index", str(library.root), "--db", db, "-m", "a", "--image-model", "b")
    assert both.exit_code == 2 and "--model and --image-model name different models" in both.stderr
    same = str(photo_models.image)
    again = _invoke("index", str(library.root), "--db", db, "--image-model", same, "-m", same)
    assert again.exit_code == 0, again.output


def test_help_states_measured_figures() -> None:
    from handspring.photos.cli_options import DEFAULT_IMAGE_MODEL, DEFAULT_THRESHOLD
    from handspring.photos.indexing import indexer
    from handspring.photos.search import duplicates
    from handspring.registry import known_model

    assert DEFAULT_IMAGE_MODEL == indexer.DEFAULT_IMAGE_MODEL
    assert DEFAULT_THRESHOLD == duplicates.DEFAULT_THRESHOLD
    gate = known_model(DEFAULT_IMAGE_MODEL).gate("image")  # type: ignore[union-attr]
    text = " ".join(_invoke("index", "--help").stdout.split())
    assert f"min cosine {gate.min_cosine:g} to fp32" in text and "0.9999 " not in text
    assert "[default: auto]" in text
    search_help = " ".join(_invoke("search", "--help").stdout.split())
    assert "which is left out (as for a QUERY of just #ID)" in search_help
    assert "With no QUERY, lists those photos newest first" in search_help
