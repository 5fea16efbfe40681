"""What every contract shares: check the inputs, queue them into the model's batcher,
and shape the vectors (Matryoshka cut, normalisation) for the request.

The batchers run the engine with normalisation off, so requests that differ only in
`dimensions` or `normalize` share batches.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from handspring.embedder import ClipModel, l2_normalize
from handspring.errors import ImageError
from handspring.server.batcher import Batcher, Overloaded
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.errors import RequestError
from handspring.server.image_inputs import ImageRef, check_format
from handspring.server.model_pool import LoadedModel, ModelPool
from handspring.text_embedder import SentenceEmbedder

if TYPE_CHECKING:
    from handspring.server.url_fetch import UrlFetcher

# Up to this many characters a request is tokenized on the event loop (tens of
# microseconds); beyond, in a thread, so one huge request does not stall the others.
INLINE_TOKENIZE_CHARS = 20_000


@dataclass(frozen=True)
class TextResult:
    model: str
    vectors: np.ndarray  # float32 [N, D]
    tokens: np.ndarray  # int64 [N], tokens each text ran as


@dataclass(frozen=True)
class ImageResult:
    model: str
    vectors: np.ndarray  # float32 [N, D]; NaN rows where `errors` says why
    errors: dict[int, str] = field(default_factory=dict)


class EmbeddingService:
    def __init__(self, config: ServerConfig, pool: ModelPool) -> None:
        self.config = config
        self.pool = pool
        workers = min(4, os.cpu_count() or 1)
        self._decode = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._fetcher: UrlFetcher | None = None
        if config.fetch_urls:  # httpx and its TLS stack cost ~15 MiB: imported only when used
            from handspring.server.url_fetch import AddressPolicy, FetchLimits, UrlFetcher

            limits = FetchLimits(max_bytes=config.url_max_bytes, timeout_s=config.url_timeout_s)
            self._fetcher = UrlFetcher(AddressPolicy(), limits)

    async def aclose(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.aclose()
        self._decode.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------- texts

    async def embed_texts(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        param: str,
        normalize: bool | None = True,
        dimensions: int | None = None,
        truncate: bool | None = None,
        prompt_name: str | None = None,
    ) -> TextResult:
        """`normalize=None` keeps the model's own choice (a Normalize module)."""
        self._check_count(len(texts), param)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(422, f"{param}[{i}]: expected a string", param=param)
            if len(text) > self.config.max_text_chars:
                raise RequestError(
                    422,
                    f"{param}[{i}]: {len(text):,} characters is over the limit of "
                    f"{self.config.max_text_chars:,}",
                    param=param,
                )
        async with self._deadline(), self.pool.lease(spec) as loaded:
            model = _with_modality(loaded, "text")
            dimensions = _check_dimensions(model.dim, dimensions)
            try:
                if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:  # keep the event loop free
                    tokens, truncated = await asyncio.to_thread(
                        model.count_tokens, texts, prompt_name
                    )
                else:
                    tokens, truncated = model.count_tokens(texts, prompt_name)
            except ValueError as exc:  # an unknown prompt name
                raise RequestError(422, str(exc), param="prompt_name") from None
            if truncated.any() and not (self.config.truncate if truncate is None else truncate):
                i = int(np.argmax(truncated))
                raise RequestError(
                    422,
                    f"{param}[{i}]: longer than the {int(tokens[i])} tokens {spec.name} reads; "
                    "shorten it or ask for truncation",
                    param=param,
                )

            def run(batch: list[str]) -> np.ndarray:
                if isinstance(model, SentenceEmbedder):
                    return model.embed_texts(
                        batch, self.config.max_batch, normalize=False, prompt_name=prompt_name
                    )
                return model.embed_texts(batch, self.config.max_batch, normalize=False)

            batcher = self.pool.batcher(loaded, "text", prompt_name, run)
            vectors = await self._submit(batcher, list(texts))
        if normalize is None:
            normalize = isinstance(model, SentenceEmbedder) and model.spec.normalize
        return TextResult(spec.name, _shape(vectors, dimensions, normalize), tokens)

    # ------------------------------------------------------------- images

    async def embed_images(
        self,
        spec: ModelSpec,
        images: Sequence[ImageRef],
        *,
        param: str,
        normalize: bool = True,
        dimensions: int | None = None,
        partial: bool = False,
    ) -> ImageResult:
        """With `partial`, an image that cannot be read gets a NaN row and a reason;
        without, it fails the request with 422 naming it."""
        self._check_count(len(images), param)
        async with self._deadline(), self.pool.lease(spec) as loaded:
            model = _with_modality(loaded, "image")
            assert isinstance(model, ClipModel)
            dimensions = _check_dimensions(model.dim, dimensions)
            prepared = await asyncio.gather(
                *(self._pixels(model, ref) for ref in images), return_exceptions=True
            )
            errors: dict[int, str] = {}
            for i, outcome in enumerate(prepared):
                if isinstance(outcome, RequestError):
                    if not partial:
                        raise outcome
                    errors[i] = outcome.message
                elif isinstance(outcome, BaseException):
                    raise outcome
            rows = [i for i in range(len(images)) if i not in errors]
            vectors = np.full((len(images), model.dim), np.nan, dtype=np.float32)
            if rows:
                batcher = self.pool.batcher(loaded, "image", None, _run_pixels(model))
                vectors[rows] = await self._submit(batcher, [prepared[i] for i in rows])
        out = _shape(vectors, dimensions, normalize)
        return ImageResult(spec.name, out, errors)

    async def _pixels(self, model: ClipModel, ref: ImageRef) -> np.ndarray:
        data = ref.data
        if data is None:
            if self._fetcher is None:  # parse_image refuses URLs first; this guards the rule
                raise RequestError(422, f"{ref.item}: image URLs are not fetched by this server")
            from handspring.server.url_fetch import UrlFetchError

            try:
                data = await self._fetcher.fetch(ref.url or "")
            except UrlFetchError as exc:
                raise RequestError(exc.status, f"{ref.item}: {exc}") from None
        check_format(data, ref.item, self.config.image_formats)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._decode, model.pixels, data, ref.item)
        except ImageError as exc:
            # The reason is ours; the decoder's own words (exc.detail) stay in the logs.
            raise RequestError(422, f"{ref.item}: {exc.reason}") from None

    # ------------------------------------------------------------- shared

    def _check_count(self, count: int, param: str) -> None:
        if count == 0:
            raise RequestError(422, f"{param}: no inputs given", param=param)
        if count > self.config.max_items:
            raise RequestError(
                413,
                f"{param}: {count} inputs is over the limit of {self.config.max_items} per request",
                param=param,
            )

    def _deadline(self) -> asyncio.Timeout:
        return asyncio.timeout(self.config.request_timeout_s)

    @staticmethod
    async def _submit(batcher: Batcher, items: list) -> np.ndarray:
        try:
            return await batcher.submit(items)
        except Overloaded as exc:
            raise RequestError(429, f"overloaded: {exc}; retry later") from None


def _with_modality(loaded: LoadedModel, modality: str) -> ClipModel | SentenceEmbedder:
    if modality not in loaded.modalities:
        raise RequestError(
            422,
            f"model {loaded.spec.name!r} does not embed {modality}s "
            f"(it embeds: {', '.join(loaded.modalities)})",
            param="model",
        )
    return loaded.model


def _check_dimensions(dim: int, dimensions: int | None) -> int | None:
    if dimensions is None or dimensions == dim:
        return None
    if not 0 < dimensions < dim:
        raise RequestError(
            422, f"dimensions must be between 1 and {dim}, got {dimensions}", param="dimensions"
        )
    return dimensions


def _run_pixels(model: ClipModel) -> Callable[[list[np.ndarray]], np.ndarray]:
    def run(batch: list[np.ndarray]) -> np.ndarray:
        return model.embed_pixels(np.stack(batch), normalize=False)

    return run


def _shape(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    if dimensions is not None:
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
    return l2_normalize(vectors) if normalize else vectors
