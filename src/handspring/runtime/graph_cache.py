"""Built graphs cached on disk, keyed by the weights' content and the build options.

Hashing ~600 MB of weights at every start would cost more than the 1 s start
budget, so a file's content hash is memoised under its (path, size, mtime,
inode); files in the Hugging Face cache are already named by their sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.errors import HandspringError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Bump when the graphs the builder writes change, so old cache entries are not reused.
GRAPH_FORMAT = 7


def cache_root() -> Path:
    if env := os.environ.get("HANDSPRING_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "handspring"


def _hf_blob_sha256(path: Path) -> str | None:
    # hub cache: snapshots/<rev>/model.safetensors -> ../../blobs/<sha256 of content>
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and len(target.name) == 64:
        return target.name
    return None


_fingerprint_lock = threading.Lock()


def file_fingerprint(path: Path) -> str:
    if blob := _hf_blob_sha256(path):
        return blob
    # Towers load in parallel threads and share weight files: hash each once.
    with _fingerprint_lock:
        return _memoised_sha256(path)


def _file_identity(path: Path) -> str:
    real = path.resolve()
    stat = real.stat()
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def _read_memo() -> dict[str, str]:
    try:
        memo = json.loads((cache_root() / "fingerprints.json").read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo: dict[str, str]) -> None:
    memo_path = cache_root() / "fingerprints.json"
    try:
        _write_atomic(memo_path, json.dumps(memo, indent=0).encode())
    except OSError as exc:  # a read-only cache still serves; the hash is just not memoised
        log.debug("could not memoise the weights' hash in %s: %s", memo_path, exc)


def _memoised_sha256(path: Path) -> str:
    memo_key = _file_identity(path)
    memo = _read_memo()
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with path.resolve().open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    memo[memo_key] = digest.hexdigest()
    _write_memo(memo)
    return memo[memo_key]


def tensors_fingerprint(
    tensors: Mapping[str, np.ndarray], keys: Iterable[str], files: Iterable[Path]
) -> str:
    """sha256 of the named tensors alone, memoised under the files' identity and the key
    list. A model whose file holds several towers (ImageBind's 4.8 GB) is fingerprinted
    per tower, so loading one never reads the others' weights."""
    names = sorted(keys)
    identity = [_file_identity(p) for p in files]
    memo_key = hashlib.sha256(json.dumps([identity, names]).encode()).hexdigest()
    with _fingerprint_lock:
        memo = _read_memo()
        if memo_key in memo:
            return memo[memo_key]
    digest = hashlib.sha256()
    for name in names:
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    with _fingerprint_lock:
        memo = _read_memo()
        memo[memo_key] = digest.hexdigest()
        _write_memo(memo)
    return memo[memo_key]


def graph_key(
    weight_files: Iterable[Path], options: dict[str, Any], fingerprints: Iterable[str] = ()
) -> str:
    """The cache key of a graph: its weights' content (whole files, or `fingerprints` of
    the tensors it reads when the caller gives them) and its build options."""
    weights = list(fingerprints) or [file_fingerprint(p) for p in weight_files]
    parts = {"format": GRAPH_FORMAT, "weights": weights, "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Beside each graph: what it was built from (`handspring cache` lists and prunes by it).
INFO_FILE = "info.json"


def graph_info(weight_files: Iterable[Path], options: Mapping[str, Any]) -> dict[str, Any]:
    """What `handspring cache` shows of a graph: its build options and its weights."""
    files = [Path(p).absolute() for p in weight_files]
    return {
        "format": GRAPH_FORMAT,
        "options": {k: v for k, v in options.items() if k != "config"},
        "weights": [str(p) for p in files],
        "weights_bytes": sum(p.stat().st_size for p in files if p.exists()),
    }


def cached_graph(
    key: str, build: Callable[[], onnx.ModelProto], info: Mapping[str, Any] | None = None
) -> tuple[Path, bool]:
    """The path of the graph for `key`, building and saving it if absent, with `info`
    beside it. Returns (path, whether it was built now)."""
    folder = cache_root() / "graphs" / key
    path = folder / "model.onnx"
    if path.is_file():
        _mark_used(folder)
        return path, False
    _check_builder_installed(key, info)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _one_builder(folder):
        if path.is_file():  # built by another process while this one waited
            _mark_used(folder)
            return path, False
        _build_into(folder, build, info)
    return path, True


def _check_builder_installed(key: str, info: Mapping[str, Any] | None) -> None:
    """Only a build needs onnx: an install that runs from a pre-built cache may leave it out
    (31 MB); then a graph missing from the cache is an error that says so."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        options = dict((info or {}).get("options", {}))
        what = " ".join(str(options[k]) for k in ("family", "tower", "precision") if k in options)
        raise HandspringError(
            f"the graph {key[:12]} ({what or 'unknown'}) is not in the graph cache "
            f"({cache_root() / 'graphs'}), and building it needs onnx, which is not "
            "installed: pip install onnx, or run where the cache was built"
        ) from exc


@contextlib.contextmanager
def _one_builder(folder: Path) -> Iterator[None]:
    """One build of a graph per machine at a time (Ray actors, server workers starting
    together): the others wait here, then load what it built. Without flock, or where the
    lock file cannot be made, builders race as before, benignly (see _build_into)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    lock = folder.parent / f".{folder.name}.lock"
    try:
        handle = open(lock, "ab")  # noqa: SIM115  # held across the yield
    except OSError:
        handle = None
    if fcntl is None or handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # The graph is in place (or the build failed): a later process finds the
            # graph first; one waiting on this unlinked file re-checks for it.
            lock.unlink(missing_ok=True)


def _build_into(
    folder: Path, build: Callable[[], onnx.ModelProto], info: Mapping[str, Any] | None
) -> None:
    import onnx

    from handspring.graph.builder import writing_weights_to

    path = folder / "model.onnx"
    key = folder.name
    # Build into a sibling folder and rename it into place, so a crash or a
    # concurrent build never leaves a half-written graph under the key.
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        # Weights go in a side file that ORT maps instead of parsing a copy of it out of
        # the protobuf, which halves the peak memory of a start (and protobuf could not
        # hold a model over 2 GB anyway). The builder writes them there as it makes them.
        with writing_weights_to(staging / "model.onnx.data"):
            model = build()
            onnx.save_model(model, str(staging / "model.onnx"))
        del model
        (staging / INFO_FILE).write_text(json.dumps(dict(info or {"format": GRAPH_FORMAT})))
        try:
            os.rename(staging, folder)
        except OSError:
            if not path.is_file():  # not a lost race with another builder
                raise
    finally:
        if staging.exists():
            for child in staging.iterdir():
                child.unlink()
            staging.rmdir()


def _mark_used(folder: Path) -> None:
    # The folder's mtime says when a graph was last loaded (atime is off on many mounts):
    # `handspring cache prune --unused-days` reads it.
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(folder)
