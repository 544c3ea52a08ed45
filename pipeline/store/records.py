"""The records that cross the state store's boundary: frozen dataclasses, not rows, tuples or dicts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

# -- ingest: pages, documents, chunks -------------------------------------------


@dataclass(frozen=True)
class StoredPage:
    """A crawled page's validators and links: what a crawl needs to revisit it."""

    url: str
    source: str
    etag: str | None
    last_modified: str | None
    content_hash: str | None
    links: tuple[str, ...] | None  # None: stored before links were kept
    redirected_since: datetime | None = None


@dataclass(frozen=True)
class Revalidated:
    """A stored page its crawl confirmed unchanged (a 304, or the same body again)."""

    url: str
    etag: str | None  # None keeps the stored one
    last_modified: str | None  # None keeps the stored one
    fetched_at: datetime | None
    links: tuple[str, ...] | None = None  # None (a 304: no body parsed) keeps the stored links


@dataclass(frozen=True)
class TextCoverage:
    """A source's stored page bodies, and those that yielded no text (the first few of them by URL)."""

    pages: int
    without_text: int
    first_without_text: tuple[str, ...]


@dataclass(frozen=True)
class StoredDocument:
    """A document extracted from a stored page, as chunking reads it."""

    url: str
    title: str
    sections: tuple[dict[str, Any], ...]  # {"heading_path": [...], "text": ...}, in page order
    content_hash: str


@dataclass(frozen=True)
class StoredChunk:
    chunk_id: str
    source: str
    url: str
    title: str
    heading_path: tuple[str, ...]
    text: str
    embedding_text: str
    token_count: int
    position: int


@dataclass(frozen=True)
class PageBody:
    """A stored page's body and the content hash it was stored under."""

    html: str
    content_hash: str


@dataclass(frozen=True)
class ChunkChanges:
    """What replacing a page's chunks did."""

    added: int
    removed: int


@dataclass(frozen=True)
class PendingText:
    """A chunk text that has no vector of the model yet, by the hash its vector will be stored under."""

    text_hash: str
    text: str


@dataclass(frozen=True)
class EmbeddedChunk:
    """A chunk with its vector of one embedding model."""

    chunk: StoredChunk
    embedding: np.ndarray


@dataclass(frozen=True)
class EmbeddingModel:
    """An embedding model that stored vectors here, and when an ingest last embedded with it."""

    model: str
    dimensions: int | None  # None until its first vector is stored
    configured_at: datetime


@dataclass(frozen=True)
class VectorPruning:
    """What one retention pass did: vectors no chunk uses any more, and vectors deleted."""

    released: int  # vectors whose last chunk went since the previous pass: their retention starts
    pruned: int  # vectors deleted: unused for longer than the retention, or of a pruned model
    models: tuple[str, ...]  # models not configured for longer than the retention, deleted with their vectors


@dataclass(frozen=True)
class SourceDeletion:
    """How many rows deleting a source removed from each ingest table."""

    pages: int
    documents: int
    chunks: int


# -- ranking: queries, candidates, rankings, context-set runs ----------------------


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


@dataclass(frozen=True)
class ContextSet:
    """A query's ranked context set: its passages packed into the token budget, and whether (and by which
    model and API version) they were reranked or, when not, why; ``embedding_model`` is the embedding
    model of the retrieval that found the candidates (None: BM25 alone, or published before it was kept).

    ``passages`` keep the published passage shape ({rank, chunk_id, url, title, heading_path, text, tokens,
    retrieval_rank, retrieval_score, rerank_score}): the table stores them as JSON, rows published by any
    earlier version included, so reading them back never depends on today's passage fields.
    """

    query_id: str
    query: str
    model: str
    reranked: bool
    api_version: str | None
    reason_not_reranked: str | None
    token_budget: int
    tokens: int
    passages: tuple[dict[str, Any], ...]
    embedding_model: str | None = None

    def published(self) -> dict[str, Any]:
        """The JSON-ready dict the JSONL line and the table row publish, fields in their published order."""
        return {
            "query_id": self.query_id,
            "query": self.query,
            "model": self.model,
            "embedding_model": self.embedding_model,
            "reranked": self.reranked,
            "api_version": self.api_version,
            "reason_not_reranked": self.reason_not_reranked,
            "token_budget": self.token_budget,
            "tokens": self.tokens,
            "passages": [dict(passage) for passage in self.passages],
        }

    def content_hash(self) -> str:
        """sha256 over the published dict, keys sorted: what an answer computed from this set was computed from."""
        return content_hash(self.published())


def content_hash(published: dict[str, Any]) -> str:
    payload = json.dumps(published, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# -- answering: cited answers ------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A query's cited answer, computed from the context set whose content hash is ``context_set_hash``.

    ``answered`` is False for an abstention and for a failure; a failure has an ``error`` code and
    no ``answer`` text (nothing is invented in its place). ``citations`` are {number, chunk_id, url}
    of the passages cited. Tokens are what the completion billed, when it was computed; ``cached``
    says an earlier run spent them.
    """

    query_id: str
    query: str
    answered: bool
    answer: str | None
    citations: tuple[dict[str, Any], ...]
    model: str
    prompt_version: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    context_set_hash: str
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def tokens_spent(self) -> int:
        """Tokens this run billed for the answer: none when it came from the cache."""
        return 0 if self.cached else self.prompt_tokens + self.completion_tokens

    def published(self) -> dict[str, Any]:
        """The JSON-ready dict the JSONL line and the table row publish, fields in their published order."""
        return {
            "query_id": self.query_id,
            "query": self.query,
            "answered": self.answered,
            "answer": self.answer,
            "citations": [dict(citation) for citation in self.citations],
            "model": self.model,
            "prompt_version": self.prompt_version,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached": self.cached,
            "context_set_hash": self.context_set_hash,
            "error": self.error,
        }


@dataclass(frozen=True)
class AnswerRun:
    """A run whose answers are kept: when it published, for how many queries, how many answered."""

    run_id: str
    created_at: datetime
    queries: int
    answered: int
