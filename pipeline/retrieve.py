"""Candidate retrieval: the top-k chunks for each query from the vector index."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.embedding import MiniLMEmbedder
from pipeline.queries import Query
from pipeline.store.vectors import VectorHit, VectorIndex


def retrieve_candidates(
    queries: Sequence[Query], vectors: VectorIndex, embedder: MiniLMEmbedder, k: int
) -> dict[str, list[VectorHit]]:
    """query_id → hits, best first."""
    query_vectors = embedder.embed([query.query for query in queries])
    return {query.query_id: vectors.query(vector, k) for query, vector in zip(queries, query_vectors, strict=True)}
