"""What every contract shares: check the inputs, prepare them (tokenize, decode), queue
them into the model's batcher for that modality, and shape the vectors (Matryoshka cut,
normalisation) for the request.

The batchers run the towers on prepared inputs with normalisation off, so requests that
differ only in `dimensions`, `normalize` or prompt share batches.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.embedder import postprocess
from handspring.errors import InputError
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.engine.batcher import Batcher, Overloaded
from handspring.server.engine.model_pool import LoadedModel, ModelPool
from handspring.server.errors import RequestError
from handspring.server.inputs.item_inputs import (
    BYTE_CHECKS,
    ItemRef,
    empty_input,
    refuse_file_as_text,
)
from handspring.towers.base import Tower

if TYPE_CHECKING:
    from handspring.server.inputs.url_fetch import UrlFetcher

# Up to this many characters a request is tokenized on the event loop (tens of
# microseconds); beyond, in a thread, so one huge request does not stall the others.
INLINE_TOKENIZE_CHARS = 20_000


@dataclass(frozen=True)
class TextResult:
    model: str
    vectors: np.ndarray  # float32 [N, D]
    tokens: np.ndarray  # int64 [N], tokens each text ran as


@dataclass(frozen=True)
class ItemResult:
    model: str
    vectors: np.ndarray  # float32 [N, D]; NaN rows where `errors` says why
    errors: dict[int, str] = field(default_factory=dict)


ImageResult = ItemResult


class EmbeddingService:
    def __init__(self, config: ServerConfig, pool: ModelPool) -> None:
        self.config = config
        self.pool = pool
        workers = min(4, os.cpu_count() or 1)
        self._decode = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._fetcher: UrlFetcher | None = None
        if config.fetch_urls:  # httpx and its TLS stack cost ~15 MiB: imported only when used
            from handspring.server.inputs.url_fetch import AddressPolicy, FetchLimits, UrlFetcher

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
        empty_ok: bool = False,
        empty_text_ok: bool = False,
    ) -> TextResult:
        """`normalize=None` keeps the model's own choice (a Normalize module). With
        `empty_ok`, no texts get no rows (of the width asked for) rather than a 422. An
        empty text is refused (400, as OpenAI and TEI do) unless `empty_text_ok`."""
        if not texts and empty_ok:
            return await self._no_texts(spec, dimensions)
        self._check_count(len(texts), param)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(422, f"{param}[{i}]: expected a string", param=param)
            if not text and not empty_text_ok:
                raise RequestError(400, f"{param}[{i}]: the input is empty", param=param)
            refuse_file_as_text(text, f"{param}[{i}]", param)
            if len(text) > self.config.max_text_chars:
                raise RequestError(
                    422,
                    f"{param}[{i}]: {len(text):,} characters is over the limit of "
                    f"{self.config.max_text_chars:,}",
                    param=param,
                )
        async with self._deadline(), self.pool.lease(spec) as loaded:
            tower: Any = _tower(loaded, "text")
            dimensions = _check_dimensions(tower.dim, dimensions)
            options = {"prompt_name": prompt_name} if prompt_name else {}
            try:
                tower.check_options(options)
                if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:  # keep the event loop free
                    prepared = await asyncio.to_thread(tower.tokenize, list(texts), options)
                else:
                    prepared = tower.tokenize(list(texts), options)
            except ValueError as exc:  # an unknown prompt name
                raise RequestError(422, str(exc), param="prompt_name") from None
            tokens = np.array([t.tokens for t in prepared], dtype=np.int64)
            cut = [i for i, t in enumerate(prepared) if t.truncated]
            if cut and not (self.config.truncate if truncate is None else truncate):
                raise RequestError(
                    422,
                    f"{param}[{cut[0]}]: longer than the {int(tokens[cut[0]])} tokens "
                    f"{spec.name} reads; shorten it or ask for truncation",
                    param=param,
                )
            vectors = await self._submit(self._batcher(loaded, tower), prepared)
        if normalize is None:
            normalize = tower.default_normalize
        return TextResult(spec.name, postprocess(vectors, normalize, dimensions), tokens)

    async def _no_texts(self, spec: ModelSpec, dimensions: int | None) -> TextResult:
        async with self._deadline(), self.pool.lease(spec) as loaded:
            dim = _tower(loaded, "text").dim
        width = _check_dimensions(dim, dimensions) or dim
        return TextResult(
            spec.name, np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64)
        )

    # ------------------------------------------------- images, sounds, arrays

    async def embed_items(
        self,
        spec: ModelSpec,
        modality: str,
        items: Sequence[ItemRef],
        *,
        param: str,
        normalize: bool = True,
        dimensions: int | None = None,
        partial: bool = False,
    ) -> ItemResult:
        """With `partial`, an item that cannot be read gets a NaN row and a reason;
        without, it fails the request with 422 naming it. An item over a size limit (413)
        fails the request either way: limits keep their status in every contract."""
        self._check_count(len(items), param)
        async with self._deadline(), self.pool.lease(spec) as loaded:
            tower = _tower(loaded, modality)
            dimensions = _check_dimensions(tower.dim, dimensions)
            prepared = await asyncio.gather(
                *(self._prepare(tower, ref) for ref in items), return_exceptions=True
            )
            errors: dict[int, str] = {}
            for i, outcome in enumerate(prepared):
                if isinstance(outcome, RequestError):
                    if not partial or outcome.status == 413:
                        raise outcome
                    errors[i] = outcome.message
                elif isinstance(outcome, BaseException):
                    raise outcome
            rows = [i for i in range(len(items)) if i not in errors]
            vectors = np.full((len(items), tower.dim), np.nan, dtype=np.float32)
            if rows:
                batcher = self._batcher(loaded, tower)
                vectors[rows] = await self._submit(batcher, [prepared[i] for i in rows])
        return ItemResult(spec.name, postprocess(vectors, normalize, dimensions), errors)

    async def embed_images(
        self, spec: ModelSpec, images: Sequence[ItemRef], **kwargs: Any
    ) -> ItemResult:
        return await self.embed_items(spec, "image", images, **kwargs)

    async def _prepare(self, tower: Tower, ref: ItemRef) -> Any:
        if ref.error is not None:
            raise ref.error
        data = ref.data
        if data is None:
            if self._fetcher is None:  # parse_item refuses URLs first; this guards the rule
                raise RequestError(
                    422, f"{ref.item}: {tower.modality} URLs are not fetched by this server"
                )
            from handspring.server.inputs.url_fetch import UrlFetchError

            try:
                data = await self._fetcher.fetch(ref.url or "")
            except UrlFetchError as exc:
                raise RequestError(exc.status, f"{ref.item}: {exc}") from None
        if not data:  # an empty upload
            raise empty_input(ref.item)
        if (check := BYTE_CHECKS.get(tower.modality)) is not None:
            check(data, ref.item, self.config)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._decode, tower.prepare, data, ref.item, {})
        except InputError as exc:
            # The reason is ours; the decoder's own words (exc.detail) stay in the logs.
            raise RequestError(422, f"{ref.item}: {exc.reason}") from None

    # ------------------------------------------------------------- shared

    def _batcher(self, loaded: LoadedModel, tower: Tower) -> Batcher:
        return self.pool.batcher(loaded, tower.modality, None, tower.run)

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


_PLURALS = {"image": "images", "text": "texts"}


def _tower(loaded: LoadedModel, modality: str) -> Tower:
    if modality not in loaded.modalities:
        raise RequestError(
            422,
            f"model {loaded.spec.name!r} does not embed {_PLURALS.get(modality, modality)} "
            f"(it embeds: {', '.join(loaded.modalities)})",
            param="model",
        )
    return loaded.model.towers[modality]


def _check_dimensions(dim: int, dimensions: int | None) -> int | None:
    if dimensions is None or dimensions == dim:
        return None
    if not 0 < dimensions < dim:
        raise RequestError(
            422, f"dimensions must be between 1 and {dim}, got {dimensions}", param="dimensions"
        )
    return dimensions
