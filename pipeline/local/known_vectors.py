"""Document vectors the pipeline already computed at ingest time, for the local rerank service.

The local service receives only texts (the ``/v1/rerank`` protocol has no IDs). The
pipeline sends each chunk's ``embedding_text``, which is exactly the text it embedded
at ingest with the same all-MiniLM-L6-v2 model, so the service can look the vector up
by text instead of embedding the document again: the same number, computed earlier.
Texts it does not know are embedded as before.

Where the vectors come from is injected: the CLI passes a function that reads them
from the pipeline's state store, so this module knows nothing about the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from pipeline.local.scoring import text_key

# A miss reloads at most this often: a text unknown now may be ingested later.
DEFAULT_RELOAD_SECONDS = 60.0

# Every (text, vector) embedded so far: chunks' embedding texts and their header lines.
EmbeddedTexts = Callable[[], Iterable[tuple[str, np.ndarray]]]


class StoredEmbeddings:
    """Every embedded text's vector keyed by SHA-256 of the text, loaded from ``embedded_texts`` on demand.

    About 20 MB for 12,700 chunks; loading them takes well under a second.
    """

    def __init__(
        self,
        embedded_texts: EmbeddedTexts,
        *,
        reload_seconds: float = DEFAULT_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._embedded_texts = embedded_texts
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._vectors: dict[bytes, np.ndarray] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def load(self) -> None:
        vectors = {text_key(text): vector for text, vector in self._embedded_texts()}
        with self._lock:
            self._vectors = vectors
            self._loaded_at = self._clock()

    def lookup(self, texts: Mapping[bytes, str]) -> dict[bytes, np.ndarray]:
        """The known vectors among ``texts`` (text key → text)."""
        if self._loaded_at is None or (
            any(key not in self._vectors for key in texts) and self._clock() - self._loaded_at >= self._reload_seconds
        ):
            self.load()
        vectors = self._vectors
        return {key: vectors[key] for key in texts if key in vectors}
