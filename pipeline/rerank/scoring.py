"""The local service's relevance scorer: dense similarity fused with BM25. Not a cross-encoder.

Cohere's and Amazon's rerankers read query and document together; this scorer only
compares separately computed MiniLM embeddings and counts shared words, so it ranks
worse than the hosted models. It exists so the pipeline runs offline with scores that
behave like a reranker's: in [0, 1], higher is more relevant, deterministic.

Fusion (absolute, not min-max): ``DENSE_WEIGHT * dense + LEXICAL_WEIGHT * lexical`` where

- ``dense`` is the query/document cosine similarity clipped to [0, 1] (unrelated
  texts sit near 0 with MiniLM, so clipping loses little);
- ``lexical`` is the document's BM25 score divided by the highest BM25 score any
  document could reach for this query in this candidate set (every query term with
  unbounded frequency), i.e. an IDF-weighted, frequency-saturated query coverage.

Min-max normalisation was rejected because it always hands some candidate 1.0 and
another 0.0, even when every candidate is irrelevant, and makes scores from different
requests (the client's 1,000-document batches) incomparable. IDF still comes from the
candidate set, so the lexical part shifts a little between batches; the dense part
does not.

Cost: embedding the documents dominates (about 35-40 ms per 200-token document on two
idle cores, so roughly 2 s for 50 new candidates), so document vectors are kept in a
bounded LRU cache keyed by text hash: the pipeline reranks the same chunks for many
queries and on every re-run (about 16 ms for 50 cached candidates). A caller that
already holds MiniLM vectors for its chunks (the vector store does) can hand them over
with :meth:`LocalRelevanceScorer.seed_vectors` and skip the embedding entirely.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence

import numpy as np

from pipeline.embedding import MiniLMEmbedder

DENSE_WEIGHT = 0.7
LEXICAL_WEIGHT = 0.3
BM25_K1 = 1.2
BM25_B = 0.75
# 8,192 vectors of 384 float32 values take about 12.6 MB.
DEFAULT_CACHE_SIZE = 8192

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def lexical_scores(query: str, documents: Sequence[str]) -> np.ndarray:
    """BM25 (k1=1.2, b=0.75) over ``documents`` as the corpus, scaled into [0, 1)."""
    query_terms = set(tokenize(query))
    document_terms = [Counter(tokenize(document)) for document in documents]
    scores = np.zeros(len(documents), dtype=np.float64)
    if not query_terms or not documents:
        return scores
    lengths = np.array([sum(terms.values()) for terms in document_terms], dtype=np.float64)
    average_length = lengths.mean() or 1.0
    length_norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / average_length)
    best_possible = 0.0
    for term in query_terms:
        frequencies = np.array([terms[term] for terms in document_terms], dtype=np.float64)
        containing = int(np.count_nonzero(frequencies))
        idf = math.log(1 + (len(documents) - containing + 0.5) / (containing + 0.5))
        scores += idf * frequencies * (BM25_K1 + 1) / (frequencies + length_norm)
        best_possible += idf * (BM25_K1 + 1)
    return scores / best_possible


class LocalRelevanceScorer:
    """Scores documents against a query in [0, 1]; safe to share across threads."""

    def __init__(self, embedder: MiniLMEmbedder, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be non-negative, got {cache_size}")
        self.embedder = embedder
        self._cache_size = cache_size
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load the embedding model now rather than on the first request."""
        self.embedder.embed(["warm up"])

    def seed_vectors(self, documents: Sequence[str], vectors: np.ndarray) -> None:
        """Use these precomputed all-MiniLM-L6-v2 unit vectors for these document texts."""
        if len(documents) != len(vectors):
            raise ValueError(f"{len(documents)} documents but {len(vectors)} vectors")
        self._remember(
            {
                _text_key(document): np.asarray(vector, dtype=np.float32)
                for document, vector in zip(documents, vectors)
            }
        )

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One score per document, in input order."""
        if not documents:
            return []
        fused = DENSE_WEIGHT * self.dense_scores(query, documents) + LEXICAL_WEIGHT * lexical_scores(
            query, documents
        )
        return [float(value) for value in np.clip(fused, 0.0, 1.0)]

    def dense_scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each document to the query, clipped to [0, 1]."""
        query_vector = self.embedder.embed([query])[0]
        similarities = self._document_vectors(documents) @ query_vector
        return np.clip(similarities.astype(np.float64), 0.0, 1.0)

    def _document_vectors(self, documents: Sequence[str]) -> np.ndarray:
        keys = [_text_key(document) for document in documents]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[key] = vector
        missing = {key: document for key, document in zip(keys, documents) if key not in found}
        if missing:
            vectors = self.embedder.embed(list(missing.values()))
            found.update(zip(missing, vectors))
            self._remember(dict(zip(missing, vectors)))
        return np.stack([found[key] for key in keys])

    def _remember(self, vectors: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            for key, vector in vectors.items():
                self._vectors[key] = vector
                self._vectors.move_to_end(key)
            while len(self._vectors) > self._cache_size:
                self._vectors.popitem(last=False)
