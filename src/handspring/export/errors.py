"""The error `handspring export` raises on purpose."""

from __future__ import annotations

from handspring.errors import HandspringError


class ExportError(HandspringError):
    """A model, a tower or an output folder that cannot be exported, and why."""

    def __init__(self, item: str, reason: str) -> None:
        self.item = item
        self.reason = reason
        super().__init__(f"{item}: {reason}")
