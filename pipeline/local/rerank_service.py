"""A local stand-in for Heroku Inference ``/v1/rerank``: the offline default and the test double.

It implements the endpoint's contract (bearer auth, the two models, the 400/401/403/404/429
cases, top_n, billing) and scores with the scorer it is given (the CLI gives it
:class:`pipeline.local.scoring.LocalRelevanceScorer`). For tests it can misbehave on
purpose (:mod:`pipeline.local.faults`): random faults at configured rates (seeded), faults
queued with :meth:`FaultPlan.add`, or, in ``test_mode``, one fault per request named by an
``X-Fault`` header. Every request is recorded in :attr:`RerankService.requests` so tests
can assert exactly what a client sent, and logged in one line (status, model, document
count, fault); the bearer token itself is never stored or logged (:mod:`pipeline.local.service`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.local.config import ServiceConfig
from pipeline.local.rate_limits import REQUESTS
from pipeline.local.responses import Rejection
from pipeline.local.service import Logged, Seen, StandInService, string_list
from pipeline.rerank.contract import API_VERSION, RATE_WINDOW_SECONDS, RERANK_PATH, search_units

# What a "malformed" fault sends: a 200 whose JSON body is cut off.
MALFORMED_BODY = b'{"results": [{"index": 0, "relevance_'


class Scorer(Protocol):
    """Scores documents against a query, one score in [0, 1] per document, in input order."""

    def score(self, query: str, documents: Sequence[str]) -> list[float]: ...

    def warm(self) -> None: ...


@dataclass(frozen=True)
class LoggedRequest(Logged):
    """One ``/v1/rerank`` request as the service saw it."""

    query: str | None
    documents: tuple[str, ...] | None
    top_n: int | None
    # (index, relevance_score) pairs returned, best first.
    results: tuple[tuple[int, float], ...]

    @property
    def document_count(self) -> int | None:
        return None if self.documents is None else len(self.documents)


@dataclass
class _SeenRerank(Seen):
    query: str | None = None
    documents: tuple[str, ...] | None = None
    top_n: int | None = None
    results: tuple[tuple[int, float], ...] = field(default=())


class RerankService(StandInService[_SeenRerank, LoggedRequest]):
    """The ``/v1/rerank`` app (:attr:`app`) plus its state: request log, fault plan, rate windows."""

    def __init__(self, config: ServiceConfig, scorer: Scorer) -> None:
        super().__init__(
            config,
            name="rerank",
            path=RERANK_PATH,
            malformed_body=MALFORMED_BODY,
            limits={REQUESTS: config.requests_per_minute},
            window_seconds=RATE_WINDOW_SECONDS,
        )
        self.max_documents = config.max_documents
        self.scorer = scorer

    @property
    def description(self) -> str:
        return f"local rerank service ({RERANK_PATH})"

    def warm(self) -> None:
        self.scorer.warm()

    def _new_seen(self) -> _SeenRerank:
        return _SeenRerank()

    def _logged(self, seen: _SeenRerank, outcome: Logged) -> LoggedRequest:
        return LoggedRequest(
            **vars(outcome), query=seen.query, documents=seen.documents, top_n=seen.top_n, results=seen.results
        )

    def _details(self, logged: LoggedRequest) -> str:
        return f"documents={logged.document_count} top_n={logged.top_n}"

    async def _respond(self, request: Request, seen: _SeenRerank) -> Response:
        model, body = await self._model_of(request, seen)
        query, documents, top_n = _validated_fields(body, self.max_documents)
        seen.query, seen.documents, seen.top_n = query, tuple(documents), top_n
        self._admit(seen, model, {REQUESTS: 1})
        faulty = await self._faulty_response(request, seen, (query,))
        if faulty is not None:
            return faulty
        scores = await run_in_threadpool(self.scorer.score, query, documents)
        ranked = sorted(range(len(documents)), key=lambda index: (-scores[index], index))[:top_n]
        seen.results = tuple((index, scores[index]) for index in ranked)
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "results": [{"index": index, "relevance_score": score} for index, score in seen.results],
                "meta": {
                    "api_version": {"version": API_VERSION, "is_experimental": False},
                    "billed_units": {"search_units": search_units(len(documents))},
                },
            }
        )


def _validated_fields(body: dict[str, Any], max_documents: int) -> tuple[str, list[str], int | None]:
    """query, documents and top_n (capped at the document count), or a 400."""
    if "query" not in body:
        raise Rejection(400, "bad_request", "missing required field: query")
    query = body["query"]
    if not isinstance(query, str) or not query.strip():
        raise Rejection(400, "bad_request", "query must be a non-empty string")
    documents = string_list(body, "documents", most=max_documents, items="documents")
    top_n = body.get("top_n")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        raise Rejection(400, "bad_request", f"top_n must be a positive integer, got {top_n!r}")
    return query, documents, None if top_n is None else min(top_n, len(documents))
