"""Vectors for the embeddings stand-in's ``--fast`` mode: a hash of each text, no model.

Scale benchmarks measure the pipeline and the client's pacing, not a model on a shared CPU:
these cost microseconds per text. They are deterministic (SHAKE-256 of the UTF-8 text, read
as signed 16-bit numbers, scaled to unit length), so a text always gets the same vector, on
any machine and with any NumPy, and two different texts are nearly orthogonal. They carry no
meaning: retrieval quality measured with them means nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DEFAULT_DIMENSIONS = 384


class HashedVectors:
    """Unit vectors of ``dimensions`` numbers derived from a hash of each text."""

    def __init__(self, dimensions: int = DEFAULT_DIMENSIONS) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {dimensions}")
        self.dimensions = dimensions

    @property
    def model(self) -> str:
        return f"hashed text ({self.dimensions} dimensions, no meaning)"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dimensions)`` float32 array of unit vectors, in input order."""
        size = 2 * self.dimensions
        digests = b"".join(hashlib.shake_256(text.encode("utf-8")).digest(size) for text in texts)
        vectors = np.frombuffer(digests, dtype="<i2").reshape(len(texts), self.dimensions).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.clip(norms, 1e-12, None)
