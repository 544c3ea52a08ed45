"""The records that cross the state store's boundary: frozen dataclasses, one per stored thing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Query:
    """One question of the queries file; ``query`` is its text, as in the file and the context sets."""

    query_id: str
    query: str


@dataclass(frozen=True)
class Candidate:
    """One chunk retrieval found for a query, at its place in the retrieval order (1 is best)."""

    retrieval_rank: int
    chunk_id: str
    retrieval_score: float


@dataclass(frozen=True)
class Ranking:
    """A query's rerank outcome: the ranking and how it was obtained, or why reranking failed."""

    query_id: str
    model: str
    # What the ranking was computed for (pipeline.ranking.candidates_hash).
    candidates_hash: str
    reranked: bool
    api_version: str | None
    search_units: int
    cached: bool
    error: str | None
    # (chunk_id, relevance_score), highest score first; empty when not reranked.
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ContextSetRun:
    """A run whose context sets are kept: when it published, for how many queries, how many reranked."""

    run_id: str
    created_at: datetime
    queries: int
    reranked: int
