"""Where cross-encoder and SPLADE checkpoints' files are, and what their config says.

Cross-encoders: a transformers folder whose config.json names a `*ForSequenceClassification`
architecture (sentence-transformers CrossEncoder folders are one, plus a modules.json
holding the lone Transformer module). SPLADE: a sentence-transformers SparseEncoder folder
(modules.json: a Transformer or MLMTransformer, then SpladePooling), or a transformers
`*ForMaskedLM` folder, read as SPLADE with max pooling as TEI reads one.

Both are found from config.json and modules.json alone, the files a hub repo's layout is
probed with; a folder with any other sentence-transformers module (Pooling, Dense...) is
a sentence model and not theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handspring.errors import CheckpointError
from handspring.models.bert import EncoderConfig
from handspring.models.splade import POOLING_ACTIVATIONS, POOLING_STRATEGIES, SpladePooling
from handspring.preprocess.hf_special_tokens import read_tokenizer_config
from handspring.registry import resolve_alias
from handspring.weights import hub
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource

SEQUENCE_CLASSIFICATION = "ForSequenceClassification"
MASKED_LM = "ForMaskedLM"
_TRANSFORMER_MODULES = ("Transformer", "MLMTransformer")
_SPLADE_POOLING = "SpladePooling"
# Configs, tokenizer.json and safetensors (repos also carry vocab files, ONNX exports and
# pickles, never read here).
TASK_PATTERNS = (
    "*.json",
    "*/config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
)


def _config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    config = read_json(path) if path.is_file() else {}
    return config if isinstance(config, dict) else {}


def _architectures(root: Path) -> list[str]:
    return [str(a) for a in _config(root).get("architectures") or []]


def _modules(root: Path) -> list[dict[str, Any]] | None:
    """modules.json's entries, or None without one."""
    path = root / "modules.json"
    if not path.is_file():
        return None
    modules = read_json(path)
    if not isinstance(modules, list):
        raise CheckpointError(str(path), "expected a list of modules")
    return modules


def _kind(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def is_cross_encoder_folder(root: Path) -> bool:
    modules = _modules(root)
    if modules is not None and [_kind(m) for m in modules] != ["Transformer"]:
        return False
    return any(a.endswith(SEQUENCE_CLASSIFICATION) for a in _architectures(root))


def is_splade_folder(root: Path) -> bool:
    modules = _modules(root)
    if modules is not None:
        return any(_kind(m) == _SPLADE_POOLING for m in modules)
    return any(a.endswith(MASKED_LM) for a in _architectures(root))


def fetch_cross_encoder(repo: str, modalities: Collection[str] = ("text-pair",)) -> Path:
    return hub.fetch(repo, TASK_PATTERNS)


def fetch_splade(repo: str, modalities: Collection[str] = ("sparse",)) -> Path:
    return hub.fetch(repo, TASK_PATTERNS)


# ----------------------------------------------------------------- reading


@dataclass(frozen=True)
class TaskFolder:
    """What a cross-encoder or SPLADE loader reads besides the weights."""

    root: Path
    transformer: Path  # the folder of config.json, the weights and the tokenizer
    config: dict[str, Any]
    max_seq_length: int | None
    prompts: dict[str, str]
    default_prompt_name: str | None


def read_task_folder(root: Path) -> TaskFolder:
    modules = _modules(root) or []
    transformers = [m for m in modules if _kind(m) in _TRANSFORMER_MODULES]
    transformer = root / str(transformers[0].get("path", "")) if transformers else root
    st_path = root / "config_sentence_transformers.json"
    st_config = read_json(st_path) if st_path.is_file() else {}
    return TaskFolder(
        root=root,
        transformer=transformer,
        config=_config(transformer),
        max_seq_length=_max_seq_length(transformer),
        prompts={k: v for k, v in (st_config.get("prompts") or {}).items() if v},
        default_prompt_name=st_config.get("default_prompt_name"),
    )


def _max_seq_length(folder: Path) -> int | None:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's model_max_length
    (what sentence-transformers and transformers cut at); the loader caps it at the
    position table."""
    path = folder / "sentence_bert_config.json"
    if path.is_file() and (length := read_json(path).get("max_seq_length")):
        return int(length)
    return read_tokenizer_config(folder).model_max_length()


def labels_of(config: dict[str, Any], source: str) -> tuple[str, ...]:
    """The labels in logit order, from `id2label` (or LABEL_i for `num_labels`)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            ordered = sorted((int(k), str(v)) for k, v in id2label.items())
        except ValueError:
            raise CheckpointError(source, "id2label keys are not label numbers") from None
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise CheckpointError(source, "id2label does not number its labels 0..n-1")
        return tuple(label for _, label in ordered)
    count = int(config.get("num_labels") or 2)
    return tuple(f"LABEL_{i}" for i in range(count))


def cross_encoder_modules(root: Path) -> None:
    """Refuse a CrossEncoder folder with modules after the Transformer (a Dense scoring
    head, a LogitScore on a causal LM): they are not built here."""
    modules = _modules(root)
    if modules is not None and [_kind(m) for m in modules] != ["Transformer"]:
        kinds = ", ".join(_kind(m) for m in modules)
        raise CheckpointError(
            str(root / "modules.json"),
            f"modules {kinds}: only a lone Transformer module (a sequence-classification "
            "model) is supported for cross-encoders",
        )


def splade_pooling(root: Path) -> SpladePooling:
    """The SpladePooling module's settings (max and relu without a modules.json, as
    TEI's `--pooling splade`). Any module but the transformer and the pooling is refused."""
    modules = _modules(root)
    if modules is None:
        return SpladePooling()
    others = [m for m in modules if _kind(m) not in (*_TRANSFORMER_MODULES, _SPLADE_POOLING)]
    if others:
        raise CheckpointError(
            str(root / "modules.json"),
            f"module {others[0].get('type')!r} not supported in a sparse encoder "
            "(supported: a Transformer or MLMTransformer, then SpladePooling)",
        )
    pooling = next(m for m in modules if _kind(m) == _SPLADE_POOLING)
    path = root / str(pooling.get("path", "")) / "config.json"
    config = read_json(path) if path.is_file() else {}
    strategy = str(config.get("pooling_strategy", "max"))
    activation = str(config.get("activation_function", "relu"))
    if strategy not in POOLING_STRATEGIES or activation not in POOLING_ACTIVATIONS:
        raise CheckpointError(
            str(path), f"SpladePooling {strategy!r} with {activation!r} is not supported"
        )
    return SpladePooling(strategy, activation)


@dataclass(frozen=True)
class TaskCheckpoint:
    folder: TaskFolder
    config: EncoderConfig
    tensors: TensorSource
    paths: list[Path]

    @property
    def source(self) -> str:
        return ", ".join(map(str, self.paths))


def open_task_checkpoint(name: str, root: Path, fetch: Callable[[str], Path]) -> TaskCheckpoint:
    """The folder (fetched through `fetch` for a hub repo), its encoder config and weights."""
    repo = resolve_alias(name)
    if not hub.is_local(repo):
        root = fetch(repo)
    folder = read_task_folder(root)
    config_path = folder.transformer / "config.json"
    try:
        config = EncoderConfig.from_hf(folder.config)
    except (ValueError, KeyError) as exc:  # an architecture or option we do not build
        raise CheckpointError(str(config_path), str(exc)) from exc
    paths = weight_paths(folder.transformer, "transformers")
    return TaskCheckpoint(folder, config, TensorSource.open(paths), paths)


def check_task_weights(
    checkpoint: TaskCheckpoint,
    expected: Mapping[str, tuple[int, ...]],
    tower: str,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Every tensor `expected` is there with its shape, `optional` ones (a decoder tied
    to the word embeddings, say) have theirs when present, and nothing else is left but
    the buffers older transformers versions saved."""
    tensors, source = checkpoint.tensors, checkpoint.source
    check_weights(tensors, expected, (), source, tower)
    for key, shape in (optional or {}).items():
        if key in tensors and tuple(tensors.shape(key)) != shape:
            raise CheckpointError(source, f"shape {tensors.shape(key)}, expected {shape}", key=key)
    known = set(expected) | set(optional or {})
    leftover = [k for k in tensors if k not in known and not k.endswith(_BUFFERS)]
    if leftover:
        raise CheckpointError(
            source, f"{len(leftover)} tensors the config does not account for", key=leftover[0]
        )


# Buffers (not weights) some transformers versions saved.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
