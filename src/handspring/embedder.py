"""One loaded-model type for every family and modality: towers keyed by modality, each
preprocessing -> graph -> postprocessing, driven here in batches.

Items are prepared (decoded, tokenized) ahead of inference: images one per task on a
thread pool while the previous batch runs, texts a batch at a time. An item that cannot
be prepared never sinks its batch: it gets a NaN row and an error naming it and the
reason, and the other items are embedded.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from handspring.errors import HandspringError, ImageError, InputError
from handspring.text_tasks import TextTasks
from handspring.towers.base import Tower

log = logging.getLogger("handspring")

# How zero-shot logits become label scores.
ZeroShot = Literal["softmax", "sigmoid"]


@dataclass
class Embeddings:
    """Embeddings in input order. Rows of items that failed are NaN, and `errors` says
    which and why; `np.asarray(result)` gives the matrix."""

    embeddings: np.ndarray  # float32 [N, D]
    errors: list[InputError] = field(default_factory=list)
    error_index: list[int] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[self.error_index] = False
        return mask

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return self.embeddings if dtype is None else self.embeddings.astype(dtype)

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def concat(cls, parts: Sequence[Embeddings], dim: int) -> Embeddings:
        if not parts:
            return cls(np.zeros((0, dim), dtype=np.float32))
        offsets = np.cumsum([0] + [len(p) for p in parts])
        return cls(
            np.concatenate([p.embeddings for p in parts]),
            [e for p in parts for e in p.errors],
            [int(off + r) for p, off in zip(parts, offsets, strict=False) for r in p.error_index],
        )


# The name this type had when only images reported errors.
ImageEmbeddings = Embeddings


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def postprocess(vectors: np.ndarray, normalize: bool, dimensions: int | None) -> np.ndarray:
    """Matryoshka cut to the first `dimensions` values, then (optionally) unit length."""
    if dimensions is not None:
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
    return l2_normalize(vectors) if normalize else vectors


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _detached(exc: InputError) -> InputError:
    # A traceback's frames hold whatever the decoder had in hand (a 12 MP buffer, say):
    # an error the caller keeps must not keep that alive.
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    return exc


class Model(TextTasks):
    """A loaded model: its towers by modality. Build one with `handspring.load`."""

    def __init__(
        self,
        name: str,
        dim: int,
        towers: Mapping[str, Tower],
        *,
        family: str,
        logit_scales: Mapping[str, float] | None = None,
        decode_workers: int = 2,
        logit_biases: Mapping[str, float] | None = None,
        zero_shot: ZeroShot = "softmax",
    ) -> None:
        self.name = name
        self.dim = dim
        self.family = family
        self.towers = dict(towers)
        # Per modality: the scale (and bias) of its zero-shot logits against texts, and
        # how logits become scores: a softmax over the labels (CLIP) or a sigmoid per
        # label (SigLIP, trained so).
        self.logit_scales = dict(logit_scales or {})
        self.logit_biases = dict(logit_biases or {})
        if zero_shot not in ("softmax", "sigmoid"):
            raise ValueError(f"zero_shot must be 'softmax' or 'sigmoid', not {zero_shot!r}")
        self.zero_shot = zero_shot
        self.decode_workers = decode_workers

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.towers)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.family}, dim={self.dim}, modalities={self.modalities})"

    def tower(self, modality: str) -> Tower:
        if (tower := self.towers.get(modality)) is None:
            raise HandspringError(
                f"{self.name}: the {modality} tower is not loaded; "
                f"load with modalities including {modality!r} (this model has: "
                f"{', '.join(self.modalities)})"
            )
        return tower

    # ---------------------------------------------------------------- any modality

    def embed(
        self,
        modality: str,
        items: Iterable[Any],
        *,
        batch_size: int | None = None,
        normalize: bool | None = True,
        dimensions: int | None = None,
        **options: Any,
    ) -> Embeddings:
        """Embed `items` of one modality. `normalize=None` keeps the model's own choice
        (a sentence-transformers Normalize module); `dimensions` keeps the first d values
        (Matryoshka). Text towers take `prompt_name` or `prompt`."""
        parts = list(
            self.iter_embed(
                modality,
                items,
                batch_size=batch_size,
                normalize=normalize,
                dimensions=dimensions,
                **options,
            )
        )
        return Embeddings.concat(parts, dimensions or self.dim)

    def iter_embed(
        self,
        modality: str,
        items: Iterable[Any],
        *,
        batch_size: int | None = None,
        normalize: bool | None = True,
        dimensions: int | None = None,
        **options: Any,
    ) -> Iterator[Embeddings]:
        """One result per chunk of inputs, in order, so an unbounded iterable streams in
        constant memory. The next chunk is prepared while this one runs."""
        tower = self.tower(modality)
        tower.check_options(options)
        if dimensions is not None and not 0 < dimensions <= self.dim:
            raise ValueError(f"dimensions must be in 1..{self.dim}, got {dimensions}")
        size = batch_size or tower.batch_size
        normalize = tower.default_normalize if normalize is None else normalize
        chunks = _batched(enumerate(items), size * tower.sort_window)
        with ThreadPoolExecutor(
            max_workers=self.decode_workers, thread_name_prefix="decode"
        ) as pool:

            def submit(chunk: list[tuple[int, Any]]) -> list[Future[Any]]:
                if tower.prepare_in_pool:
                    return [
                        pool.submit(tower.prepare, item, tower.describe(item, i), options)
                        for i, item in chunk
                    ]
                names = [tower.describe(item, i) for i, item in chunk]
                prepared = tower.prepare_batch([item for _, item in chunk], names, options)
                return [_done(p) for p in prepared]

            pending = next(chunks, None)
            futures = submit(pending) if pending else []
            while pending:
                following = next(chunks, None)
                next_futures = submit(following) if following else []
                out = self._run_chunk(tower, pending, futures, size)
                out.embeddings = postprocess(out.embeddings, normalize, dimensions)
                yield out
                pending, futures = following, next_futures

    def _run_chunk(
        self, tower: Tower, chunk: list[tuple[int, Any]], futures: list[Future[Any]], size: int
    ) -> Embeddings:
        out = np.full((len(chunk), self.dim), np.nan, dtype=np.float32)
        errors: list[InputError] = []
        error_rows: list[int] = []
        ready: list[tuple[int, Any]] = []
        for row, (index, item) in enumerate(chunk):
            future = futures[row]
            futures[row] = None  # type: ignore[call-overload]  # let prepared inputs go once used
            try:
                ready.append((row, future.result()))
            except InputError as exc:
                errors.append(_detached(exc))
                error_rows.append(row)
            except Exception as exc:  # a decoder bug must not sink the batch either
                name = tower.describe(item, index)
                errors.append(
                    tower.error_type(name, "could not be read", f"{type(exc).__name__}: {exc}")
                )
                error_rows.append(row)
            # Without sorting, runs start as soon as they fill, while later items still decode.
            if tower.sort_window == 1 and len(ready) == tower.run_rows:
                _run_into(tower, ready, out)
                ready = []
        if tower.sort_window > 1:
            ready.sort(key=lambda r: -tower.length(r[1]))  # stable: equal lengths keep order
            step = min(size, tower.sorted_run_rows)
            for start in range(0, len(ready), step):
                _run_into(tower, ready[start : start + step], out)
        elif ready:
            _run_into(tower, ready, out)
        for exc in errors:
            # Returned to the caller in `errors`; logged for those who want a trail.
            log.info("%s skipped: %s", tower.modality, exc)
        return Embeddings(out, errors, error_rows)

    # ------------------------------------------------------------------- shortcuts

    def embed_images(
        self, images: Iterable[Any], batch_size: int = 16, normalize: bool = True
    ) -> Embeddings:
        """Embed paths, bytes, PIL images or arrays. See `Embeddings` for errors."""
        return self.embed("image", images, batch_size=batch_size, normalize=normalize)

    def iter_embed_images(
        self, images: Iterable[Any], batch_size: int = 16, normalize: bool = True
    ) -> Iterator[Embeddings]:
        return self.iter_embed("image", images, batch_size=batch_size, normalize=normalize)

    def embed_audio(
        self, sounds: Iterable[Any], batch_size: int = 8, normalize: bool = True
    ) -> Embeddings:
        """Embed sound files (paths or bytes) or (waveform, sample_rate) pairs."""
        return self.embed("audio", sounds, batch_size=batch_size, normalize=normalize)

    def embed_texts(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        dimensions: int | None = None,
        **options: Any,
    ) -> np.ndarray:
        """float32 [N, D] in input order. `normalize=None` is the model's own choice: unit
        vectors, except for a sentence-transformers model without a Normalize module.
        A text that is not a string is a TypeError (`embed("text", ...)` reports it per item)."""
        parts = list(self.iter_embed_texts(texts, batch_size, normalize, dimensions, **options))
        width = dimensions or self.dim
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)

    def iter_embed_texts(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        dimensions: int | None = None,
        **options: Any,
    ) -> Iterator[np.ndarray]:
        """Embeddings for each chunk of inputs, in order. Within a chunk the texts run in
        batches of similar length, so little is padded."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings; wrap a single text in a list")
        parts = self.iter_embed(
            "text",
            texts,
            batch_size=batch_size,
            normalize=normalize,
            dimensions=dimensions,
            **options,
        )
        offset = 0
        for part in parts:
            if part.errors:
                first = part.errors[0]
                raise TypeError(f"text #{offset + part.error_index[0]} {first.reason}")
            offset += len(part)
            yield part.embeddings

    # ------------------------------------------------------------------- zero-shot

    @property
    def logit_scale(self) -> float:
        """The zero-shot scale of images against texts (CLIP's learned temperature)."""
        if "image" not in self.logit_scales:
            raise HandspringError(f"{self.name}: no zero-shot scale for images against text")
        return self.logit_scales["image"]

    def classify(
        self,
        items: Iterable[Any],
        labels: Sequence[str],
        template: str = "a photo of a {}.",
        batch_size: int = 16,
        modality: str = "image",
    ) -> tuple[np.ndarray, Embeddings]:
        """Zero-shot label probabilities [N, L] from the scaled (and biased) cosine
        similarities, as the model was trained: a softmax over the labels (CLIP, ImageBind)
        or a sigmoid per label (SigLIP: each in 0..1, not summing to 1); and the item
        embeddings, whose `errors` name the items that could not be read."""
        if not labels:
            raise ValueError("classify needs at least one label")
        if modality not in self.logit_scales:
            raise HandspringError(f"{self.name}: no zero-shot scale for {modality} against text")
        text = self.embed_texts([template.format(label) for label in labels], normalize=True)
        embedded = self.embed(modality, items, batch_size=batch_size)
        probs = np.full((len(embedded), len(labels)), np.nan, dtype=np.float32)
        ok = embedded.ok
        logits = self.logit_scales[modality] * embedded.embeddings[ok] @ text.T  # [N_ok, L]
        logits += self.logit_biases.get(modality, 0.0)
        if self.zero_shot == "sigmoid":
            probs[ok] = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without overflow
        else:
            exp = np.exp(logits - logits.max(axis=1, keepdims=True, initial=-np.inf))
            probs[ok] = exp / exp.sum(axis=1, keepdims=True)
        return probs, embedded


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


def _run_into(tower: Tower, ready: list[tuple[int, Any]], out: np.ndarray) -> None:
    rows = [row for row, _ in ready]
    out[rows] = tower.run([prepared for _, prepared in ready])


# Names from before every family shared one model type.
ClipModel = Model
__all__ = ["ClipModel", "Embeddings", "ImageEmbeddings", "ImageError", "Model", "l2_normalize"]
