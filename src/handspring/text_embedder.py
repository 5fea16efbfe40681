"""Sentence-transformers text models (BERT, DistilBERT, XLM-RoBERTa): tokenize
-> one ONNX graph (encoder, pooling, Dense) -> normalise, in length-sorted batches."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from handspring.embedder import l2_normalize
from handspring.errors import CheckpointError, TokenizerError
from handspring.graph.layers import Precision
from handspring.models.bert import (
    INPUT_NAMES,
    EncoderConfig,
    encoder_weight_shapes,
    is_ignored_key,
)
from handspring.models.sentence_head import POOLING_MASK, build_sentence_graph
from handspring.registry import Int8Gate, known_model
from handspring.runtime.towers import built_session
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource
from handspring.weights.sentence_transformers import SentenceModel, read_sentence_model

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("handspring")

# Prefixes under which task-head checkpoints keep the base model's keys.
_KEY_PREFIXES = ("", "bert.", "roberta.", "distilbert.", "mpnet.")


class SentenceEmbedder:
    """A loaded sentence-transformers text model. Build one with `handspring.load`."""

    def __init__(
        self,
        name: str,
        spec: SentenceModel,
        config: EncoderConfig,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        dim: int,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.session = session
        self.tokenizer = tokenizer
        self.dim = dim
        self.modalities = ("text",)

    def __repr__(self) -> str:
        return f"SentenceEmbedder({self.name!r}, dim={self.dim})"

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name or self.spec.default_prompt_name
        if name is None:
            return ""
        if name not in self.spec.prompts:
            known = ", ".join(sorted(self.spec.prompts)) or "none"
            raise ValueError(f"{self.name}: no prompt named {name!r} (known: {known})")
        return self.spec.prompts[name]

    def embed_texts(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """float32 [N, dim] in input order. `normalize` defaults to the model's
        own (a Normalize module); `dimensions` keeps the first d values
        (Matryoshka) and renormalises when normalising."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings; wrap a single text in a list")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{i} is {type(text).__name__}, not str")
        if dimensions is not None and not 0 < dimensions <= self.dim:
            raise ValueError(f"dimensions must be in 1..{self.dim}, got {dimensions}")
        prefix = self._prompt(prompt_name, prompt)
        prompt_length = self._token_count(prefix) if prefix else 0
        inputs = self._model_inputs(prefix, texts)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        if inputs:
            # Tokenized once; each batch takes its rows, trimmed to its own longest.
            feeds = self._feeds(inputs, prompt_length)
            lengths = feeds[INPUT_NAMES[1]].sum(axis=1)
            order = np.argsort(-lengths, kind="stable")
            for start in range(0, len(inputs), batch_size):
                rows = order[start : start + batch_size]
                width = lengths[rows].max()
                batch = {name: value[rows, :width] for name, value in feeds.items()}
                out[rows] = self.session.run(None, batch)[0]
        if dimensions is not None:
            out = np.ascontiguousarray(out[:, :dimensions])
        normalize = self.spec.normalize if normalize is None else normalize
        return l2_normalize(out) if normalize else out

    def _model_inputs(self, prefix: str, texts: list[str]) -> list[str]:
        inputs = [prefix + t for t in texts]
        return [t.lower() for t in inputs] if self.spec.do_lower_case else inputs

    @property
    def max_tokens(self) -> int:
        """The longest text the model reads, in tokens (its max_seq_length); longer ones are cut."""
        return int(self.tokenizer.truncation["max_length"])  # type: ignore[index]

    def count_tokens(
        self, texts: Sequence[str], prompt_name: str | None = None, prompt: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokens each text runs as (prompt and special tokens included, after truncation),
        and whether it was cut to `max_seq_length`."""
        inputs = self._model_inputs(self._prompt(prompt_name, prompt), list(texts))
        encodings = self.tokenizer.encode_batch(inputs) if inputs else []
        lengths = np.array([sum(e.attention_mask) for e in encodings], dtype=np.int64)
        return lengths, np.array([bool(e.overflowing) for e in encodings], dtype=bool)

    def _token_count(self, prompt: str) -> int:
        """The prompt's tokens as sentence-transformers counts them: with the
        leading special token, without a trailing one."""
        encoding = self.tokenizer.encode(prompt.lower() if self.spec.do_lower_case else prompt)
        count = sum(encoding.attention_mask)
        return count - 1 if count and encoding.special_tokens_mask[count - 1] else count

    def iter_embed_texts(
        self, texts: Iterable[str], batch_size: int = 32, normalize: bool | None = None
    ) -> Iterator[np.ndarray]:
        """Embeddings for each chunk of inputs, in order (see ClipModel.iter_embed_texts)."""
        iterator = iter(texts)
        while chunk := list(itertools.islice(iterator, batch_size * 8)):
            yield self.embed_texts(chunk, batch_size, normalize)

    def _feeds(self, texts: list[str], prompt_length: int) -> dict[str, np.ndarray]:
        """Graph inputs for `texts`, padded to the longest of them."""
        encodings = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {
            INPUT_NAMES[0]: np.array([e.ids for e in encodings], dtype=np.int64),
            INPUT_NAMES[1]: mask,
        }
        if self.config.takes_token_types:
            feeds[INPUT_NAMES[2]] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        if not self.spec.pooling.include_prompt:
            pooling_mask = mask.copy()
            pooling_mask[:, :prompt_length] = 0
            feeds[POOLING_MASK] = pooling_mask
        return feeds


def _key_prefix(tensors: TensorSource, cfg: EncoderConfig, source: str) -> str:
    for prefix in _KEY_PREFIXES:
        if next(iter(encoder_weight_shapes(cfg, prefix))) in tensors:
            return prefix
    raise CheckpointError(
        source, f"no {cfg.model_type} encoder keys found (tried prefixes {_KEY_PREFIXES})"
    )


def _tokenizer(folder: Path, spec: SentenceModel, cfg: EncoderConfig) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{folder}: no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    # RoBERTa positions start after padding_idx, so two positions are not usable.
    usable = cfg.max_position_embeddings - (
        cfg.position_padding_idx + 1 if cfg.roberta_positions else 0
    )
    tokenizer.enable_truncation(max_length=min(spec.max_seq_length or usable, usable))
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id", cfg.pad_token_id)
    pad_token = padding.get("pad_token") or tokenizer.id_to_token(pad_id) or "[PAD]"
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest in the batch
    return tokenizer


def check_int8_gate(name: str) -> None:
    """int8 is offered per model: refused where its measured gate failed,
    allowed with a warning where it was never measured."""
    known = known_model(name)
    gate = known.int8_gate if known else None
    if gate is None:
        log.warning(
            "%s: int8 accuracy has not been measured for this model (registry gate: "
            "min cosine >= %.2f, nearest-neighbour agreement >= %.2f); compare with fp32 first",
            name, Int8Gate.MIN_COSINE, Int8Gate.MIN_NN_AGREEMENT,
        )  # fmt: skip
    elif not gate.passed:
        raise ValueError(
            f"{name}: int8 is refused (measured min cosine {gate.min_cosine:.4f}, "
            f"nearest-neighbour agreement {gate.nn_agreement:.2f}); use precision='fp32'"
        )


def load_sentence_model(
    name: str, folder: Path, precision: Precision, threads: int | None, spinning: bool = True
) -> SentenceEmbedder:
    if precision.int8:
        check_int8_gate(name)
    spec = read_sentence_model(folder)
    encoder_folder = spec.transformer_folder
    config_path = encoder_folder / "config.json"
    try:
        cfg = EncoderConfig.from_hf(read_json(config_path))
    except ValueError as exc:  # an architecture or option we do not build
        raise CheckpointError(str(config_path), str(exc)) from exc
    paths = weight_paths(encoder_folder, "transformers")
    tensors = TensorSource.open(paths)
    source = ", ".join(map(str, paths))
    prefix = _key_prefix(tensors, cfg, source)
    expected = encoder_weight_shapes(cfg, prefix)
    check_weights(tensors, expected, (), source, "encoder")
    leftover = [k for k in tensors if k not in expected and not is_ignored_key(k)]
    if leftover:
        raise CheckpointError(
            source, f"{len(leftover)} tensors the config does not account for", key=leftover[0]
        )
    dense_sources = [
        TensorSource.open(weight_paths(layer.folder, "transformers")) for layer in spec.dense
    ]
    for layer, dense in zip(spec.dense, dense_sources, strict=True):
        shapes = {"linear.weight": (layer.out_features, layer.in_features)}
        if layer.bias:
            shapes["linear.bias"] = (layer.out_features,)
        check_weights(dense, shapes, ("linear.",), dense.describe(), "Dense")
    options = {
        "family": "sentence",
        "config": asdict(cfg),
        "prefix": prefix,
        "pooling": asdict(spec.pooling),
        "dense": [(d.in_features, d.out_features, d.bias, d.activation) for d in spec.dense],
        "precision": precision.tag,
    }
    weight_files = paths + [f.path for d in dense_sources for f in d.files]

    def build() -> onnx.ModelProto:
        return build_sentence_graph(
            cfg, tensors, precision, spec.pooling, spec.dense, dense_sources, prefix
        )

    session = built_session(weight_files, options, build, threads, spinning).session
    dim = spec.dense[-1].out_features if spec.dense else cfg.hidden_size * len(spec.pooling.modes)
    return SentenceEmbedder(name, spec, cfg, session, _tokenizer(encoder_folder, spec, cfg), dim)
