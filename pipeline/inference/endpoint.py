"""What the client core must know about one Heroku Inference endpoint: its path, its config vars, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from pipeline.inference.errors import ErrorClasses


@dataclass(frozen=True)
class EndpointContract:
    """One endpoint as its messages name it.

    ``name`` says what a request is for in messages (``rerank``); the ``*_setting`` names are the
    config vars Heroku sets when the model is attached (``heroku ai:models:create --as RERANK``
    sets ``RERANK_URL``, ``RERANK_KEY`` and ``RERANK_MODEL_ID``), so every message names the
    variable to fix; ``known_models`` are listed when the server does not know the model.
    """

    name: str
    path: str
    url_setting: str
    key_setting: str
    model_setting: str
    known_models: tuple[str, ...]
    errors: ErrorClasses = field(default_factory=ErrorClasses)


def endpoint_of(base_url: str) -> str:
    """The base URL as it may be shown and hashed: normalised, without a trailing slash or credentials."""
    url = httpx.URL(base_url.strip())
    return str(url.copy_with(username=None, password=None)).rstrip("/")
