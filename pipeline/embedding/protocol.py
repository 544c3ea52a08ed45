"""What ingest, retrieval and evaluation need of an embedding model, local or remote."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Embeds passages and questions into unit vectors of one embedding space.

    ``model`` names the space the vectors belong to: stored vectors are keyed by it with the
    hash of the exact embedded text, and each model has its own Chroma collection, since
    vectors of two models are not comparable (nor, in general, of the same length).
    """

    @property
    def model(self) -> str: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dimensions)`` float32 array: questions, embedded for searching."""
        ...

    def iter_document_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(positions, vectors)`` per batch of passages embedded for indexing, so callers can
        persist progress batch by batch instead of holding every vector."""
        ...
