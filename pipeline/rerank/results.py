"""What a rerank call returns: ranked results, one query's outcome, a run's totals, and the cache's form of them.

Cached results are keyed by :func:`cache_key` and stored by :meth:`RerankResponse.to_cache_value`
as scores by document hash, so the same candidates sent in another order are served from the
cache with their own scores.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.inference.cache import request_key, text_hash
from pipeline.inference.errors import InferenceError


@dataclass(frozen=True)
class RerankResult:
    index: int
    relevance_score: float


@dataclass(frozen=True)
class RerankResponse:
    """Ranked results (highest score first; ``index`` points into the caller's documents).

    ``latency_seconds`` spans the whole call: rate-limiter waits, retries and batches.
    """

    results: tuple[RerankResult, ...]
    api_version: str
    is_experimental: bool
    search_units: int
    requests: int
    retries: int
    rate_limited: int
    latency_seconds: float

    def to_cache_value(self, documents: Sequence[str]) -> dict[str, Any]:
        """JSON-serialisable form stored by a :class:`RerankCache`: scores by document hash, not position.

        ``documents`` are the ones this response ranked; keyed by their hashes, the scores
        map back onto the same documents sent in any other order (:meth:`from_cache_value`).
        """
        hashes = [document_hash(document) for document in documents]
        return {
            "scores_by_document": [[hashes[result.index], result.relevance_score] for result in self.results],
            "api_version": self.api_version,
            "is_experimental": self.is_experimental,
        }

    @classmethod
    def from_cache_value(cls, value: dict[str, Any], documents: Sequence[str]) -> RerankResponse:
        """A response served from cache, its indexes pointing into ``documents``: no HTTP call, nothing billed.

        Identical documents share a hash; their scores go to their positions in request order.
        Raises KeyError when a cached document is not among ``documents`` (an unusable entry).
        """
        positions: dict[str, deque[int]] = {}
        for index, document in enumerate(documents):
            positions.setdefault(document_hash(document), deque()).append(index)
        results = [
            RerankResult(positions[hashed].popleft(), float(score)) for hashed, score in value["scores_by_document"]
        ]
        return cls(
            results=tuple(ranked(results)),
            api_version=str(value["api_version"]),
            is_experimental=bool(value["is_experimental"]),
            search_units=0,
            requests=0,
            retries=0,
            rate_limited=0,
            latency_seconds=0.0,
        )


@dataclass(frozen=True)
class RerankRequest:
    query_id: str
    query: str
    documents: Sequence[str]
    top_n: int | None = None

    def __post_init__(self) -> None:
        check_top_n(self.top_n)


@dataclass(frozen=True)
class RerankOutcome:
    """One query's result in :meth:`RerankClient.rerank_many`: a ``response`` or an ``error``.

    ``error`` is the failure's code (``http_401``, ``timeout``, ...: :mod:`pipeline.inference.errors`),
    the only part meant for published output; ``detail`` is ``"<ExceptionType>: <message>"``
    (free of the key) for the logs.
    """

    query_id: str
    response: RerankResponse | None = None
    error: str | None = None
    error_type: str | None = None
    detail: str | None = None
    cached: bool = False
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0

    @property
    def ok(self) -> bool:
        return self.response is not None

    @classmethod
    def succeeded(cls, query_id: str, response: RerankResponse, *, cached: bool = False) -> RerankOutcome:
        return cls(
            query_id=query_id,
            response=response,
            cached=cached,
            requests=response.requests,
            retries=response.retries,
            rate_limited=response.rate_limited,
        )

    @classmethod
    def failed(cls, query_id: str, error: InferenceError) -> RerankOutcome:
        return cls(
            query_id=query_id,
            error=error.code,
            error_type=type(error).__name__,
            detail=f"{type(error).__name__}: {error}",
            requests=error.requests,
            retries=error.retries,
            rate_limited=error.rate_limited,
        )


@dataclass(frozen=True)
class RerankStats:
    """Totals over one :meth:`RerankClient.rerank_many` run; latencies cover non-cached successes."""

    queries: int
    succeeded: int
    failed: int
    cache_hits: int
    calls: int
    retries: int
    rate_limited: int
    search_units: int
    # Queries answered over HTTP; cache hits and failures have no latency to report.
    latency_samples: int
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[RerankOutcome]) -> RerankStats:
        latencies = sorted(
            outcome.response.latency_seconds
            for outcome in outcomes
            if outcome.response is not None and not outcome.cached
        )
        return cls(
            queries=len(outcomes),
            succeeded=sum(outcome.ok for outcome in outcomes),
            failed=sum(not outcome.ok for outcome in outcomes),
            cache_hits=sum(outcome.cached for outcome in outcomes),
            calls=sum(outcome.requests for outcome in outcomes),
            retries=sum(outcome.retries for outcome in outcomes),
            rate_limited=sum(outcome.rate_limited for outcome in outcomes),
            search_units=sum(outcome.response.search_units for outcome in outcomes if outcome.response),
            latency_samples=len(latencies),
            latency_p50_seconds=_percentile(latencies, 0.50),
            latency_p95_seconds=_percentile(latencies, 0.95),
        )


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(len(sorted_values) * fraction))
    return sorted_values[rank - 1]


def document_hash(document: str) -> str:
    return text_hash(document)


def cache_key(endpoint: str, model: str, query: str, documents: Sequence[str], top_n: int | None) -> str:
    """sha256 over the endpoint, model, query, the sorted sha256 of every document, and top_n.

    Sorted because a score depends on which documents are sent, not in which order: an index
    rebuilt after a restart may return the same candidates in another order, and that must not
    bill the query again (the cached scores are keyed by document, see ``to_cache_value``).
    ``endpoint`` is the base URL without credentials (:func:`~pipeline.inference.endpoint_of`).
    The key is :func:`~pipeline.inference.request_key` over ``[query, hashes, top_n]``, the same
    digest as before the inference core existed, so rows already cached still hit.
    """
    document_hashes = sorted(document_hash(document) for document in documents)
    return request_key(endpoint, model, query, document_hashes, top_n)


def check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be at least 1 or None, got {top_n}")


def ranked(results: Sequence[RerankResult]) -> list[RerankResult]:
    """Highest score first; ties keep the lower index first so order is deterministic."""
    return sorted(results, key=lambda result: (-result.relevance_score, result.index))
