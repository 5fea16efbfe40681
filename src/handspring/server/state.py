"""What route handlers reach through `request.app.state`."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from handspring import __version__
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.engine.model_pool import ModelPool
from handspring.server.engine.service import EmbeddingService
from handspring.server.guards.shutdown import Draining
from handspring.server.metrics import Metrics


@dataclass
class ServerState:
    config: ServerConfig
    metrics: Metrics
    pool: ModelPool
    service: EmbeddingService
    version: str = __version__
    draining: Draining = field(default_factory=Draining)

    @staticmethod
    def of(request: Request) -> ServerState:
        return request.app.state.handspring

    async def prompt_if_known(self, spec: ModelSpec, name: str | None) -> str | None:
        """`name` when the model has a prompt of that name (Weaviate's task types), else None."""
        if not name:
            return None
        async with self.pool.lease(spec) as loaded:
            text = loaded.model.towers.get("text")
            has = text is not None and name in text.prompts
        return name if has else None

    async def max_tokens(self, spec: ModelSpec) -> int:
        async with self.pool.lease(spec) as loaded:
            return loaded.model.max_tokens
