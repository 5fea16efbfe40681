"""Errors raised by Handspring. Each names the item (file, key, image) and the reason."""

from __future__ import annotations


class HandspringError(Exception):
    """Base class of every error Handspring raises on purpose."""


class CheckpointError(HandspringError):
    """A checkpoint is missing, corrupt, of an unknown architecture, or does not fit its config."""

    def __init__(self, source: str, reason: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source} [{key}]" if key else source
        super().__init__(f"{where}: {reason}")


class InputError(HandspringError):
    """One input item (an image, a sound, a text...) could not be turned into model input.
    `item` names it (a path, or `<bytes #3>`).

    `reason` is meant for people; `detail` holds the decoder's own words, which a server
    keeps out of its answers."""

    def __init__(self, item: str, reason: str, detail: str | None = None) -> None:
        self.item = item
        self.reason = reason
        self.detail = detail
        super().__init__(f"{item}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple:
        return (type(self), (self.item, self.reason, self.detail))


class ImageError(InputError):
    """An image that could not be decoded or is over a limit."""


class AudioError(InputError):
    """A sound that could not be decoded or is over a limit."""


class TokenizerError(HandspringError):
    """Tokenizer files are missing or unusable."""
