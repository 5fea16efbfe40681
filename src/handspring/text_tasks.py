"""What a model with a text tower does beyond embedding: token counts and per-token
vectors (TEI's `/tokenize`, `/embed_all`), a cross-encoder's scores and ranking
(`/predict`, `/rerank`) and SPLADE's sparse terms (`/embed_sparse`). `Model` has these
by inheritance; each needs the tower it names loaded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.errors import HandspringError

if TYPE_CHECKING:
    from handspring.embedder import Embeddings
    from handspring.towers.base import Tower


class TextTasks:
    """Mixed into `Model`, whose `name`, `tower` and `embed` these use."""

    name: str

    if TYPE_CHECKING:

        def tower(self, modality: str) -> Tower: ...

        def embed(
            self,
            modality: str,
            items: Iterable[Any],
            *,
            batch_size: int | None = None,
            normalize: bool | None = True,
            dimensions: int | None = None,
            **options: Any,
        ) -> Embeddings: ...

    # --------------------------------------------------------------------- texts

    @property
    def max_tokens(self) -> int:
        """The longest text the text tower reads, in tokens; longer ones are cut."""
        return self._text_tower().max_tokens

    def count_tokens(
        self, texts: Sequence[str], prompt_name: str | None = None, prompt: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokens each text runs as (prompt and special tokens included, after truncation),
        and whether it was cut to the model's length."""
        tower = self._text_tower()
        options = {k: v for k, v in (("prompt_name", prompt_name), ("prompt", prompt)) if v}
        tower.check_options(options)
        tokens = tower.tokenize(list(texts), options)
        return (
            np.array([t.tokens for t in tokens], dtype=np.int64),
            np.array([t.truncated for t in tokens], dtype=bool),
        )

    def _text_tower(self) -> Any:
        from handspring.towers.text import TextTower

        tower = self.tower("text")
        assert isinstance(tower, TextTower)
        return tower

    def embed_tokens(
        self, texts: Sequence[str], batch_size: int = 32, **options: Any
    ) -> list[np.ndarray]:
        """Each text's last hidden state, one row per token it ran as (special tokens
        included): [T_i, D] per text, as TEI's `/embed_all`. Sentence-transformers models."""
        tower = self._text_tower()
        if not getattr(tower, "gives_tokens", False):
            raise HandspringError(f"{self.name}: this model gives no per-token vectors")
        tower.check_options(options)
        tokens = tower.tokenize(list(texts), options)
        out: list[np.ndarray] = []
        for start in range(0, len(tokens), batch_size):
            out += tower.run_tokens(tokens[start : start + batch_size])
        return out

    # ------------------------------------------------- cross-encoders, SPLADE

    @property
    def labels(self) -> tuple[str, ...]:
        """A cross-encoder's labels (its config's `id2label`), in the order of its scores."""
        return tuple(self.tower("text-pair").labels)  # type: ignore[attr-defined]

    def score(
        self, items: Iterable[Any], *, raw: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """A cross-encoder's scores for texts or (text, text) pairs: float32 [N, labels].
        As TEI: a sigmoid on a lone label (rerankers), a softmax over several
        (classifiers); `raw` gives the logits. An item that is neither is a TypeError."""
        from handspring.towers.cross_encoder import label_scores

        result = self.embed("text-pair", items, batch_size=batch_size, normalize=False)
        if result.errors:
            raise TypeError(f"item #{result.error_index[0]} {result.errors[0].reason}")
        return label_scores(result.embeddings, raw)

    def rank(
        self, query: str, documents: Sequence[str], *, raw: bool = False, top_k: int | None = None
    ) -> list[tuple[int, float]]:
        """(document index, score) by decreasing relevance to `query`: a reranker's
        (one-label cross-encoder's) score of each (query, document) pair."""
        if len(self.labels) != 1:
            raise HandspringError(
                f"{self.name} has {len(self.labels)} labels: a reranker has one; "
                "use `score` for a classifier"
            )
        scores = self.score([(query, d) for d in documents], raw=raw)[:, 0]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [(i, float(scores[i])) for i in order[:top_k]]

    def embed_sparse(
        self, texts: Iterable[str], batch_size: int | None = None, **options: Any
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """SPLADE term weights per text: (vocabulary indices, weights) of the nonzero
        entries. Text towers' options (`prompt_name`...) apply."""
        from handspring.towers.splade import sparse_entries

        result = self.embed("sparse", texts, batch_size=batch_size, normalize=False, **options)
        if result.errors:
            raise TypeError(f"text #{result.error_index[0]} {result.errors[0].reason}")
        return [sparse_entries(row) for row in result.embeddings]
