"""Results kept by request: a cache an endpoint layer reads before it sends and writes after a success.

A key is a SHA-256 over the endpoint (the base URL without credentials), the model and what
the request asks (:func:`request_key`): the local stand-in and Heroku serve the same model
names, and an answer from one must not be passed off as the other's. Each endpoint layer
chooses the content that determines its answer (rerank: the query, the sorted hashes of its
documents and ``top_n``). The durable cache lives in the state store; :class:`InMemoryResultCache`
serves tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Protocol


class ResultCache(Protocol):
    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


class InMemoryResultCache:
    """A dict behind a lock."""

    def __init__(self) -> None:
        self._values: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._values.get(key)

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._values[key] = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


def text_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_key(endpoint: str, model: str, *content: Any) -> str:
    """SHA-256 (hex) over the JSON list ``[endpoint, model, *content]``; ``content`` must be JSON-serialisable."""
    payload = json.dumps([endpoint, model, *content], ensure_ascii=False)
    return text_hash(payload)
