"""Searching the photo index: text in any language, example photos, and rclip-style
combinations of them with weights.

    parse_query('horse + stripes')                  # two texts
    parse_query('"./new york.jpg" + night')         # an example photo and a text
    parse_query('2:golden retriever - 0.5:#42')     # weights; an indexed photo by id
    parse_query('./waves.wav + sunset')             # photos that sound like this (ImageBind)

Each term is embedded and made unit length, the weighted sum (minus for "-"
terms) is made unit length again, and that vector is searched.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from handspring.embedder import Model, l2_normalize
from handspring.errors import HandspringError
from handspring.photos.scanning.metadata import enable_heif
from handspring.photos.stores.records import Hit, SearchFilter
from handspring.photos.stores.store import PhotoStore
from handspring.registry import resolve_alias

TermKind = Literal["text", "photo_path", "photo_id", "audio_path"]

# A path term with one of these suffixes is a sound: the index's model must embed audio.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")

# The original photo-search tool's pair: clip-ViT-B-32 images, multilingual text queries.
MULTILINGUAL_TEXT_FOR = {
    "sentence-transformers/clip-ViT-B-32": "st-clip-vit-b-32-multilingual",
}
_WEIGHT = re.compile(r"^(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))?:(?P<rest>.+)$", re.DOTALL)
_PHOTO_ID = re.compile(r"^(?:#|id:)(?P<id>\d+)$")
_TOKEN = re.compile(r'"[^"]*"|\S+')


class QueryError(HandspringError, ValueError):
    """A query that cannot be run: empty, unparsable, or terms that cancel out."""


@dataclass(frozen=True)
class QueryTerm:
    kind: TermKind
    value: str
    weight: float = 1.0  # negative for "-" terms


def parse_query(text: str) -> list[QueryTerm]:
    """rclip's syntax: terms joined by ` + ` and ` - `, each optionally `W:term`;
    a term starting with /, ./, ../ or ~/ is an example photo's path, `#42` or
    `id:42` an indexed photo. Double quotes keep a term with " + " in it whole."""
    terms: list[QueryTerm] = []
    sign, words, operator = 1.0, [], False
    for token in _TOKEN.findall(text):
        if token in ("+", "-"):
            if operator:
                raise QueryError(f"two operators in a row in query {text!r}")
            if words:
                terms.append(_term(" ".join(words), sign))
                words = []
            sign, operator = (-1.0 if token == "-" else 1.0), True
            continue
        operator = False
        words.append(token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token)
    if words:
        terms.append(_term(" ".join(words), sign))
    elif terms or text.strip():
        raise QueryError(f"query {text!r} ends with an operator")
    if not terms:
        raise QueryError("empty query")
    return terms


def _term(raw: str, sign: float) -> QueryTerm:
    weight, value = 1.0, raw.strip()
    if match := _WEIGHT.match(value):
        weight = float(match["weight"]) if match["weight"] else 1.0
        value = match["rest"].strip()
    if not value:
        raise QueryError(f"empty term in {raw!r}")
    if value.startswith(("http://", "https://")):
        raise QueryError(f"{value}: URLs are not fetched; download the photo and give its path")
    if match := _PHOTO_ID.match(value):
        return QueryTerm("photo_id", match["id"], sign * weight)
    if value.startswith(("/", "./", "../", "~/")):
        kind: TermKind = "audio_path" if value.lower().endswith(AUDIO_SUFFIXES) else "photo_path"
        return QueryTerm(kind, value, sign * weight)
    return QueryTerm("text", value, sign * weight)


def default_text_model(image_model: str) -> str:
    """The multilingual text model for the original tool's image model; for any other
    CLIP model, its own text tower."""
    return MULTILINGUAL_TEXT_FOR.get(resolve_alias(image_model), image_model)


class QueryModels:
    """The models that turn queries into vectors, each loaded on first use.

    The image model embeds example photos that are not indexed, with the index's
    precision and decoding. Text models and the audio tower run in fp32: a query is a
    few tokens or one sound, and int8 gates are measured per model."""

    def __init__(self, image_model: str, text_model: str, precision: str = "int8") -> None:
        self.image_model = image_model
        self.text_model = text_model
        self.precision = precision
        self._image: Model | None = None
        self._text: Model | None = None
        self._audio: Model | None = None
        self._lock = threading.Lock()

    @property
    def text_loaded(self) -> bool:
        return self._text is not None

    def text(self) -> Model:
        with self._lock:
            if self._text is None:
                import handspring

                self._text = handspring.load(self.text_model, modalities=("text",))
            return self._text

    def image(self) -> Model:
        with self._lock:
            if self._image is None:
                import handspring

                enable_heif()
                loaded = handspring.load(
                    self.image_model,
                    modalities=("image",),
                    precision=self.precision,
                    fast_decode=True,
                )
                if "image" not in loaded.modalities:
                    raise QueryError(f"{self.image_model} is a text model, not an image model")
                self._image = loaded
            return self._image

    def audio(self) -> Model:
        """The image model's audio tower (ImageBind). fp32, as for texts: the index holds
        no sounds whose precision a query must match, and a query is one sound."""
        with self._lock:
            if self._audio is None:
                import handspring
                from handspring.loading import locate

                # Asked of the family, not of a failed load: a load fails for other reasons.
                if "audio" not in locate(self.image_model).family.modalities:
                    raise QueryError(
                        f"the index's model {self.image_model!r} does not embed sounds "
                        "(index with an ImageBind model for photos that sound like this)"
                    )
                self._audio = handspring.load(self.image_model, modalities=("audio",))
            return self._audio

    def embed_sound(self, path: str) -> np.ndarray:
        """Unit vector of a sound file, in the image model's space (ImageBind); AudioError
        naming the path if it cannot be read, QueryError if the model hears nothing."""
        try:
            model = self.audio()
        except QueryError as exc:
            raise QueryError(f"{path}: {exc}") from None
        result = model.embed_audio([path])
        if result.errors:
            raise result.errors[0]
        return result.embeddings[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return l2_normalize(np.asarray(self.text().embed_texts(texts), dtype=np.float32))

    def embed_photo(self, path: str) -> np.ndarray:
        """Unit vector of a photo file; ImageError naming the path if it cannot be read."""
        result = self.image().embed_images([path])
        if result.errors:
            raise result.errors[0]
        return result.embeddings[0]


class Searcher:
    """Queries over one store. `allow_paths`: whether example photos that are not
    indexed may be read from disk. A server keeps it False, so a request can never
    make it read a local file; indexed photos are found by path either way."""

    def __init__(self, store: PhotoStore, models: QueryModels, *, allow_paths: bool = False):
        self.store = store
        self.models = models
        self.allow_paths = allow_paths

    def search(
        self,
        terms: list[QueryTerm] | str,
        flt: SearchFilter = SearchFilter(),  # noqa: B008 (frozen, so one shared default is safe)
        limit: int = 20,
        offset: int = 0,
    ) -> list[Hit]:
        terms = parse_query(terms) if isinstance(terms, str) else terms
        if len(terms) == 1 and terms[0].kind == "photo_id" and terms[0].weight > 0:
            # `#42` alone is "photos like 42": the same answer as similar(42).
            return self.similar(_photo_id(terms[0].value), flt, limit, offset)
        return self.store.search(self.query_vector(terms), flt, limit, offset)

    def similar(
        self,
        photo_id: int,
        flt: SearchFilter = SearchFilter(),  # noqa: B008
        limit: int = 20,
        offset: int = 0,
    ) -> list[Hit]:
        """Photos most like an indexed one, which is left out of its own results (it would
        always come first); as `search("#42")`."""
        vector = self._indexed_vector(photo_id)
        hits = self.store.search(vector, flt, limit + offset + 1, 0)
        return [h for h in hits if h.photo.id != photo_id][offset : offset + limit]

    def query_vector(self, terms: list[QueryTerm]) -> np.ndarray:
        """The unit vector a combination of terms stands for."""
        if not terms:
            raise QueryError("empty query")
        vectors: list[np.ndarray | None] = [None] * len(terms)
        texts = [(i, t.value) for i, t in enumerate(terms) if t.kind == "text"]
        if texts:
            embedded = self.models.embed_texts([value for _, value in texts])
            for (i, _), vector in zip(texts, embedded, strict=True):
                vectors[i] = vector
        for i, term in enumerate(terms):
            if term.kind == "photo_id":
                vectors[i] = self._indexed_vector(_photo_id(term.value))
            elif term.kind == "photo_path":
                vectors[i] = self._photo_path_vector(term.value)
            elif term.kind == "audio_path":
                vectors[i] = self._sound_path_vector(term.value)
        dims = {len(v) for v in vectors if v is not None}
        expected = self._index_dim()
        if len(dims) > 1 or (expected is not None and dims != {expected}):
            raise QueryError(
                f"query vectors have {sorted(dims)} dimensions but the index holds "
                f"{expected}: the text model {self.models.text_model!r} does not fit "
                f"the image model {self.models.image_model!r}"
            )
        total = sum(t.weight * l2_normalize(v) for t, v in zip(terms, vectors, strict=True))
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryError("the query's terms cancel out: nothing is left to search for")
        return (total / norm).astype(np.float32)

    def _index_dim(self) -> int | None:
        model = getattr(self.store, "model", None)
        info = model() if callable(model) else None
        return info.dim if info is not None else None

    def _indexed_vector(self, photo_id: int) -> np.ndarray:
        vector = self.store.vector(photo_id)
        if vector is None:
            raise KeyError(f"photo {photo_id} is not indexed")
        return vector

    def _photo_path_vector(self, raw: str) -> np.ndarray:
        path = os.path.abspath(os.path.expanduser(raw))
        get_by_path = getattr(self.store, "get_by_path", None)
        photo = get_by_path(path) if callable(get_by_path) else None
        if photo is not None and (vector := self.store.vector(photo.id)) is not None:
            return vector
        if not self.allow_paths:
            raise QueryError(f"{raw}: not an indexed photo (reading other files is disabled here)")
        return self.models.embed_photo(path)

    def _sound_path_vector(self, raw: str) -> np.ndarray:
        if not self.allow_paths:
            raise QueryError(f"{raw}: reading sound files is disabled here")
        return self.models.embed_sound(os.path.abspath(os.path.expanduser(raw)))


def _photo_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"{value!r} is not a photo id") from None
