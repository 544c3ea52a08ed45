"""What answering needs from a chat model, whichever serves it: Heroku's ``/v1/chat/completions`` or the
extractive answerer that stands in for it offline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GenerationSettings:
    """The generation knobs a request carries; part of every cached answer's key."""

    max_completion_tokens: int = 600
    temperature: float = 0.0

    def key(self) -> str:
        return f"max_completion_tokens={self.max_completion_tokens};temperature={self.temperature:g}"


@dataclass(frozen=True)
class Completion:
    """One chat completion: the assistant's text, the model that wrote it and what it billed."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatModel(Protocol):
    """Something that completes a conversation of ``{"role", "content"}`` messages."""

    @property
    def model(self) -> str:
        """The model and where it is served (e.g. ``claude-4-5-haiku@us.inference.heroku.com``): a cache key part."""
        ...

    def complete(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> Completion: ...
