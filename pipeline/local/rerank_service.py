"""A local stand-in for Heroku Inference ``/v1/rerank``: the offline default and the test double.

It implements the endpoint's contract (bearer auth, the two models, the 400/401/403/404/429
cases, top_n, billing) and scores with the scorer it is given (the CLI gives it
:class:`pipeline.local.scoring.LocalRelevanceScorer`). For tests it can misbehave on
purpose (:mod:`pipeline.local.faults`): random faults at configured rates (seeded), faults
queued with :meth:`FaultPlan.add`, or, in ``test_mode``, one fault per request named by an
``X-Fault`` header. Every request is recorded in :attr:`RerankService.requests` so tests
can assert exactly what a client sent, and logged in one line (status, model, document
count, fault); the bearer token itself is never stored or logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.local.config import ServiceConfig
from pipeline.local.faults import FAULT_HEADER, FaultInjector, FaultPlan
from pipeline.local.responses import Rejection, rate_limited
from pipeline.rerank.contract import API_VERSION, KNOWN_MODELS, RATE_WINDOW_SECONDS, RERANK_PATH, search_units

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """Scores documents against a query, one score in [0, 1] per document, in input order."""

    def score(self, query: str, documents: Sequence[str]) -> list[float]: ...

    def warm(self) -> None: ...


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the service saw it; ``authorized`` says whether the token matched (never the token)."""

    received_at: float
    finished_at: float
    status: int
    authorized: bool
    model: str | None
    query: str | None
    documents: tuple[str, ...] | None
    top_n: int | None
    fault: str | None
    # (index, relevance_score) pairs returned, best first.
    results: tuple[tuple[int, float], ...]

    @property
    def document_count(self) -> int | None:
        return None if self.documents is None else len(self.documents)


@dataclass
class _Seen:
    """What the handler learned about a request, filled in as validation proceeds."""

    authorized: bool = False
    model: str | None = None
    query: str | None = None
    documents: tuple[str, ...] | None = None
    top_n: int | None = None
    fault: str | None = None
    results: tuple[tuple[int, float], ...] = field(default=())


class RerankService:
    """The Starlette app (:attr:`app`) plus its state: request log, fault plan, rate windows."""

    def __init__(self, config: ServiceConfig, scorer: Scorer) -> None:
        self.config = config
        self.scorer = scorer
        self._injector = FaultInjector(config.seed)
        self._log: deque[LoggedRequest] = deque(maxlen=config.request_log_limit)
        self._log_lock = threading.Lock()
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._rate_lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(RERANK_PATH, self._rerank, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    @property
    def faults(self) -> FaultPlan:
        """Faults queued from Python for the coming requests."""
        return self._injector.plan

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear(self) -> None:
        """Forget logged requests, queued faults and rate windows."""
        with self._log_lock:
            self._log.clear()
        with self._rate_lock:
            self._windows.clear()
        self.faults.clear()

    def warm(self) -> None:
        self.scorer.warm()

    def close(self) -> None:
        """Release requests held by a timeout fault."""
        self._injector.release()

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _rerank(self, request: Request) -> Response:
        received_at = time.time()
        seen = _Seen()
        try:
            response = await self._respond(request, seen)
        except Rejection as rejection:
            response = rejection.response()
        logged = LoggedRequest(
            received_at=received_at,
            finished_at=time.time(),
            status=response.status_code,
            authorized=seen.authorized,
            model=seen.model,
            query=seen.query,
            documents=seen.documents,
            top_n=seen.top_n,
            fault=seen.fault,
            results=seen.results,
        )
        with self._log_lock:
            self._log.append(logged)
        # Neither the token nor the texts: a line per request says what happened, not what was sent.
        log.info(
            "rerank %d model=%s documents=%s top_n=%s authorized=%s fault=%s %.0fms",
            logged.status,
            logged.model,
            logged.document_count,
            logged.top_n,
            logged.authorized,
            logged.fault or "-",
            (logged.finished_at - logged.received_at) * 1000,
        )
        return response

    async def _respond(self, request: Request, seen: _Seen) -> Response:
        self._check_token(request.headers.get("authorization"))
        seen.authorized = True
        body = await self._json_body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejection(400, "bad_request", "missing required field: model")
        seen.model = model
        if model not in KNOWN_MODELS:
            raise Rejection(404, "not_found", f"model {model!r} not found; available models: {', '.join(KNOWN_MODELS)}")
        if self.config.allowed_models is not None and model not in self.config.allowed_models:
            raise Rejection(403, "forbidden", f"this key has no access to model {model!r}")
        query, documents, top_n = _validated_fields(body, self.config.max_documents)
        seen.query, seen.documents, seen.top_n = query, tuple(documents), top_n
        self._admit(model)
        fault = self._injector.choose(self.config, request.headers.get(FAULT_HEADER), query)
        seen.fault = str(fault) if fault else None
        if self.config.added_latency_seconds:
            await asyncio.sleep(self.config.added_latency_seconds)
        if fault is not None:
            faulty = await self._injector.act_out(fault, self.config)
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

    def _check_token(self, authorization: str | None) -> None:
        if not authorization:
            raise Rejection(401, "unauthorized", "missing Authorization header; expected 'Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        matches = hmac.compare_digest(token.strip().encode("utf-8"), self.config.api_key.encode("utf-8"))
        if scheme.lower() != "bearer" or not matches:
            raise Rejection(401, "unauthorized", "invalid bearer token")

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise Rejection(400, "bad_request", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise Rejection(400, "bad_request", "request body must be a JSON object")
        return body

    def _admit(self, model: str) -> None:
        """Sliding-window limit per model; rejected requests do not count against it."""
        limit = self.config.requests_per_minute
        if limit is None:
            return
        with self._rate_lock:
            now = time.monotonic()
            window = self._windows[model]
            while window and window[0] <= now - RATE_WINDOW_SECONDS:
                window.popleft()
            if len(window) < limit:
                window.append(now)
                return
            wait = window[0] + RATE_WINDOW_SECONDS - now
        raise rate_limited(
            f"rate limit of {limit} requests per minute exceeded for model {model!r}",
            wait,
            omit_retry_after=self.config.omit_retry_after,
        )


def _validated_fields(body: dict[str, Any], max_documents: int) -> tuple[str, list[str], int | None]:
    """query, documents and top_n (capped at the document count), or a 400."""
    if "query" not in body:
        raise Rejection(400, "bad_request", "missing required field: query")
    query = body["query"]
    if not isinstance(query, str) or not query.strip():
        raise Rejection(400, "bad_request", "query must be a non-empty string")
    if "documents" not in body:
        raise Rejection(400, "bad_request", "missing required field: documents")
    documents = body["documents"]
    if not isinstance(documents, list) or not all(isinstance(document, str) for document in documents):
        raise Rejection(400, "bad_request", "documents must be a list of strings")
    if not documents:
        raise Rejection(400, "bad_request", "documents must not be empty")
    if len(documents) > max_documents:
        raise Rejection(
            400, "bad_request", f"too many documents: {len(documents)} (at most {max_documents} per request)"
        )
    top_n = body.get("top_n")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        raise Rejection(400, "bad_request", f"top_n must be a positive integer, got {top_n!r}")
    return query, documents, None if top_n is None else min(top_n, len(documents))
