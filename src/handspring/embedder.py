"""CLIP embeddings: preprocessing -> ONNX Runtime -> normalisation, in batches.

Images are decoded on a thread pool while the previous batch runs (Pillow
releases the GIL while decoding and resizing), so decode and inference overlap.
A bad image never sinks its batch: it is reported with its name and reason
and the other images are embedded.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from handspring.errors import HandspringError, ImageError
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS, ImageInput, decode_image, describe_item
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.text import ClipTokenizer
from handspring.runtime.towers import TowerSession

log = logging.getLogger("handspring")

TOWER_BATCH = 8


@dataclass
class ImageEmbeddings:
    """Embeddings in input order. Rows of images that failed are NaN, and
    `errors` says which and why; `np.asarray(result)` gives the matrix."""

    embeddings: np.ndarray  # float32 [N, P]
    errors: list[ImageError] = field(default_factory=list)
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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class ClipModel:
    """A loaded CLIP model. Build one with `handspring.load`."""

    def __init__(
        self,
        name: str,
        dim: int,
        image_tower: TowerSession | None,
        text_tower: TowerSession | None,
        transform: ImageTransform | None,
        tokenizer: ClipTokenizer | None,
        logit_scale: float,
        *,
        fixed_text_length: bool = False,
        exif_orientation: bool = True,
        fast_decode: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        decode_workers: int = 2,
    ) -> None:
        self.name = name
        self.dim = dim
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.transform = transform
        self.tokenizer = tokenizer
        self.logit_scale = logit_scale
        self.exif_orientation = exif_orientation
        self.fast_decode = fast_decode
        self.max_pixels = max_pixels
        self.decode_workers = decode_workers
        # Pre-exported (Immich) text graphs take ids padded to the context length.
        self._fixed_text_length = fixed_text_length

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, t in (("image", self.image_tower), ("text", self.text_tower)) if t)

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, dim={self.dim}, modalities={self.modalities})"

    # ----------------------------------------------------------------- images

    def _need(self, tower: TowerSession | None, modality: str) -> TowerSession:
        if tower is None:
            raise HandspringError(
                f"{self.name}: the {modality} tower is not loaded; "
                f"load with modalities including {modality!r}"
            )
        return tower

    def pixels(self, source: ImageInput, item: str) -> np.ndarray:
        """float32 [3, S, S]: `source` decoded and transformed as `embed_images` does it.
        Raises ImageError naming `item`."""
        self._need(self.image_tower, "image")
        assert self.transform is not None
        draft = self.transform.draft_size() if self.fast_decode else None
        image = decode_image(
            source,
            item=item,
            max_pixels=self.max_pixels,
            exif_orientation=self.exif_orientation,
            draft_shortest=draft,
        )
        return self.transform(image)

    def iter_embed_images(
        self, images: Iterable[ImageInput], batch_size: int = 16, normalize: bool = True
    ) -> Iterator[ImageEmbeddings]:
        """One result per batch of `batch_size` inputs, in order, so an
        unbounded iterable streams in constant memory."""
        self._need(self.image_tower, "image")
        batches = _batched(enumerate(images), batch_size)
        with ThreadPoolExecutor(
            max_workers=self.decode_workers, thread_name_prefix="decode"
        ) as pool:

            def submit(batch: list[tuple[int, ImageInput]]) -> list[Future[np.ndarray] | None]:
                return [pool.submit(self.pixels, src, describe_item(src, i)) for i, src in batch]

            pending = next(batches, None)
            futures = submit(pending) if pending else []
            while pending:
                following = next(batches, None)
                # Decode the next batch while this one runs.
                next_futures = submit(following) if following else []
                yield self._run_image_batch(pending, futures, normalize)
                pending, futures = following, next_futures

    def _run_image_batch(
        self,
        batch: list[tuple[int, ImageInput]],
        futures: list[Future[np.ndarray] | None],
        normalize: bool,
    ) -> ImageEmbeddings:
        out = np.full((len(batch), self.dim), np.nan, dtype=np.float32)
        errors: list[ImageError] = []
        error_rows: list[int] = []
        pixels: list[np.ndarray] = []
        rows: list[int] = []
        for row, (index, source) in enumerate(batch):
            future, futures[row] = futures[row], None  # let decoded pixels go once used
            assert future is not None
            try:
                pixels.append(future.result())
                rows.append(row)
            except ImageError as exc:
                errors.append(exc)
                error_rows.append(row)
            except Exception as exc:  # a decoder bug must not sink the batch either
                item = describe_item(source, index)
                errors.append(ImageError(item, "could not be read", f"{type(exc).__name__}: {exc}"))
                error_rows.append(row)
            # Chunks run as soon as they fill, while later images still decode.
            if len(pixels) == TOWER_BATCH or (row == len(batch) - 1 and pixels):
                out[rows] = self.embed_pixels(np.stack(pixels), normalize)
                pixels, rows = [], []
        for exc in errors:
            # Returned to the caller in `errors`; logged for those who want a trail.
            log.info("image skipped: %s", exc)
        return ImageEmbeddings(out, errors, error_rows)

    def embed_pixels(self, pixels: np.ndarray, normalize: bool = True) -> np.ndarray:
        """float32 [N, P] from preprocessed pixels [N, 3, S, S] (see `pixels`). A row's
        vector does not depend on the other rows, bit for bit."""
        tower = self._need(self.image_tower, "image")
        input_name = tower.session.get_inputs()[0].name
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        # The tower runs at most TOWER_BATCH images at once: chunks of 8 ran as fast as 16
        # and faster than 32 here, with a third of the activation memory of 32.
        for start in range(0, len(pixels), TOWER_BATCH):
            out[start : start + TOWER_BATCH] = tower.session.run(
                None, {input_name: pixels[start : start + TOWER_BATCH]}
            )[0]
        return l2_normalize(out) if normalize else out

    def embed_images(
        self, images: Iterable[ImageInput], batch_size: int = 16, normalize: bool = True
    ) -> ImageEmbeddings:
        """Embed paths, bytes, PIL images or arrays. See `ImageEmbeddings` for errors."""
        parts = list(self.iter_embed_images(images, batch_size, normalize))
        if not parts:
            return ImageEmbeddings(np.zeros((0, self.dim), dtype=np.float32))
        offsets = np.cumsum([0] + [len(p) for p in parts])
        return ImageEmbeddings(
            np.concatenate([p.embeddings for p in parts]),
            [e for p in parts for e in p.errors],
            [int(off + r) for p, off in zip(parts, offsets, strict=False) for r in p.error_index],
        )

    # ------------------------------------------------------------------ texts

    def iter_embed_texts(
        self, texts: Iterable[str], batch_size: int = 32, normalize: bool = True
    ) -> Iterator[np.ndarray]:
        """Embeddings for each chunk of inputs, in order. Within a chunk the
        texts run in batches of similar length, so little is padded."""
        chunk_size = batch_size * 8
        for chunk in _batched(texts, chunk_size):
            yield self._embed_text_chunk(chunk, batch_size, normalize)

    def _embed_text_chunk(
        self, texts: Sequence[str], batch_size: int, normalize: bool
    ) -> np.ndarray:
        tower = self._need(self.text_tower, "text")
        assert self.tokenizer is not None
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{i} is {type(text).__name__}, not str")
        # Tokenized once; each batch takes its rows, trimmed to its own longest.
        tokens = self.tokenizer.encode(texts)
        order = np.argsort(-tokens.lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            ids = tokens.input_ids[rows, : tokens.lengths[rows].max()]
            out[rows] = self._run_text_batch(tower, ids, tokens.eot_index[rows])
        return l2_normalize(out) if normalize else out

    def _run_text_batch(self, tower: TowerSession, ids: np.ndarray, eot: np.ndarray) -> np.ndarray:
        assert self.tokenizer is not None
        if self._fixed_text_length:
            inp = tower.session.get_inputs()[0]
            padded = np.full((len(ids), self.tokenizer.context_length), self.tokenizer.pad_id)
            padded[:, : ids.shape[1]] = ids
            dtype = np.int32 if "int32" in inp.type else np.int64
            return tower.session.run(None, {inp.name: padded.astype(dtype)})[0]
        return tower.session.run(None, {"input_ids": ids, "eot_index": eot})[0]

    @property
    def max_tokens(self) -> int:
        """The longest text the text tower reads, in tokens; longer ones are cut."""
        self._need(self.text_tower, "text")
        assert self.tokenizer is not None
        return self.tokenizer.context_length

    def count_tokens(
        self, texts: Sequence[str], prompt_name: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokens each text runs as (start and end included, after truncation), and whether
        it was cut to the context length. CLIP has no prompts: a `prompt_name` is refused
        (the argument is there so both kinds of model count the same way)."""
        if prompt_name:
            raise ValueError(f"{self.name}: no prompt named {prompt_name!r} (CLIP has none)")
        self._need(self.text_tower, "text")
        assert self.tokenizer is not None
        tokens = self.tokenizer.encode(texts)
        return tokens.lengths, tokens.truncated

    def embed_texts(
        self, texts: Iterable[str], batch_size: int = 32, normalize: bool = True
    ) -> np.ndarray:
        """float32 [N, P] text embeddings in input order."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings; wrap a single text in a list")
        parts = list(self.iter_embed_texts(texts, batch_size, normalize))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    # ------------------------------------------------------------- zero-shot

    def classify(
        self,
        images: Iterable[ImageInput],
        labels: Sequence[str],
        template: str = "a photo of a {}.",
        batch_size: int = 16,
    ) -> tuple[np.ndarray, ImageEmbeddings]:
        """Zero-shot label probabilities [N, L] (softmax over the labels of
        the scaled cosine similarities, as CLIP was trained), and the image
        embeddings, whose `errors` name the images that could not be read."""
        if not labels:
            raise ValueError("classify needs at least one label")
        text = self.embed_texts([template.format(label) for label in labels])
        images_out = self.embed_images(images, batch_size=batch_size)
        probs = np.full((len(images_out), len(labels)), np.nan, dtype=np.float32)
        ok = images_out.ok
        logits = self.logit_scale * images_out.embeddings[ok] @ text.T  # [N_ok, L]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True, initial=-np.inf))
        probs[ok] = exp / exp.sum(axis=1, keepdims=True)
        return probs, images_out
