"""A local stand-in for Heroku Inference ``/v1/rerank``: the offline default and the test double.

It implements the endpoint's contract (bearer auth, the two models, the 400/401/403/404/429
cases, top_n, billing) and scores with :class:`LocalRelevanceScorer`. For tests it can
misbehave on purpose: random faults at configured rates (seeded), faults queued with
:meth:`FaultPlan.add`, or, in ``test_mode``, one fault per request named by an
``X-Fault`` header. Every request is recorded in :attr:`RerankService.requests` so tests
can assert exactly what a client sent, and logged in one line (status, model, document
count, fault); the bearer token itself is never stored or logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.credentials import check_secret
from pipeline.embedding import MiniLMEmbedder
from pipeline.rerank.contract import (
    API_VERSION,
    KNOWN_MODELS,
    MAX_DOCUMENTS_PER_REQUEST,
    RATE_WINDOW_SECONDS,
    RERANK_PATH,
    search_units,
)
from pipeline.rerank.scoring import LocalRelevanceScorer

log = logging.getLogger(__name__)

FAULT_HEADER = "X-Fault"
# What a "malformed" fault sends: a 200 whose JSON body is cut off.
MALFORMED_BODY = b'{"results": [{"index": 0, "relevance_'
# What a "garbled" fault sends: a body its Content-Encoding header does not describe.
GARBLED_BODY = b"this is not gzip"
FAULT_KINDS = ("400", "429", "500", "timeout", "malformed", "garbled")
_HANG_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ServiceConfig:
    """How the local service behaves. Rates are probabilities per accepted request."""

    api_key: str
    # None: every known model is attached; otherwise the others answer 403.
    allowed_models: Collection[str] | None = None
    # Per model, over a sliding 60 s window; None: unlimited.
    requests_per_minute: int | None = None
    # Documents accepted per request; lower than the contract's 1,000 to play a stricter server.
    max_documents: int = MAX_DOCUMENTS_PER_REQUEST
    error_rate: float = 0.0
    added_latency_seconds: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    omit_retry_after: bool = False
    seed: int = 0
    # Honour the X-Fault request header.
    test_mode: bool = False
    # How long a "timeout" fault holds the request (released early when the service stops).
    hang_seconds: float = 30.0
    # Retry-After sent with an injected 429.
    fault_retry_after_seconds: int = 1
    # Recent requests kept in the in-memory log (documents included, so keep it bounded).
    request_log_limit: int = 1000

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("ServiceConfig.api_key is empty: the service must check a bearer token")
        check_secret("RERANK_KEY", self.api_key)
        for name in ("error_rate", "timeout_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"ServiceConfig.{name} must be within [0, 1], got {rate}")
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ValueError(f"ServiceConfig.requests_per_minute must be at least 1, got {self.requests_per_minute}")
        if not 1 <= self.max_documents <= MAX_DOCUMENTS_PER_REQUEST:
            raise ValueError(
                f"ServiceConfig.max_documents must be within [1, {MAX_DOCUMENTS_PER_REQUEST}], got {self.max_documents}"
            )
        for name in ("added_latency_seconds", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServiceConfig.{name} must not be negative, got {getattr(self, name)}")
        unknown = set(self.allowed_models or ()) - set(KNOWN_MODELS)
        if unknown:
            raise ValueError(
                f"allowed_models lists unknown models {sorted(unknown)}; known: {', '.join(KNOWN_MODELS)}"
            )


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


@dataclass(frozen=True)
class Fault:
    """``kind`` is one of :data:`FAULT_KINDS` or latency.

    400 plays a server refusing this query's content (a per-query failure, unlike a bad
    setting); garbled sends a 200 whose body does not match its Content-Encoding.
    """

    kind: str
    latency_seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Fault:
        text = text.strip()
        if text in FAULT_KINDS:
            return cls(text)
        name, _, seconds = text.partition("=")
        if name == "latency":
            try:
                return cls("latency", float(seconds))
            except ValueError:
                pass
        raise ValueError(f"unknown fault {text!r}; use {', '.join(FAULT_KINDS)} or latency=<seconds>")

    def __str__(self) -> str:
        return f"latency={self.latency_seconds:g}" if self.kind == "latency" else self.kind


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int | None
    query: str | None


class FaultPlan:
    """Faults queued from Python: each hits the next ``times`` matching requests (None: all)."""

    def __init__(self) -> None:
        self._queue: list[_QueuedFault] = []
        self._lock = threading.Lock()

    def add(self, fault: str, *, times: int | None = 1, query: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` requests (only those with this ``query`` if given)."""
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, got {times}")
        with self._lock:
            self._queue.append(_QueuedFault(Fault.parse(fault), times, query))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self, query: str) -> Fault | None:
        with self._lock:
            for queued in self._queue:
                if queued.query is None or queued.query == query:
                    if queued.remaining is not None:
                        queued.remaining -= 1
                        if queued.remaining == 0:
                            self._queue.remove(queued)
                    return queued.fault
        return None


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


class _Rejection(Exception):
    """An error response (4xx) raised from deep in validation and turned into JSON in one place."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


class RerankService:
    """The Starlette app (:attr:`app`) plus its state: request log, fault plan, rate windows."""

    def __init__(self, config: ServiceConfig, scorer: LocalRelevanceScorer | None = None) -> None:
        self.config = config
        self.faults = FaultPlan()
        self._scorer = scorer
        self._scorer_lock = threading.Lock()
        self._log: deque[LoggedRequest] = deque(maxlen=config.request_log_limit)
        self._log_lock = threading.Lock()
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._rate_lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self.app = Starlette(
            routes=[
                Route(RERANK_PATH, self._rerank, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

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

    def scorer(self) -> LocalRelevanceScorer:
        with self._scorer_lock:
            if self._scorer is None:
                self._scorer = LocalRelevanceScorer(MiniLMEmbedder())
            return self._scorer

    def warm(self) -> None:
        self.scorer().warm()

    def close(self) -> None:
        """Release requests held by a timeout fault."""
        self._stopping.set()

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _rerank(self, request: Request) -> Response:
        received_at = time.time()
        seen = _Seen()
        try:
            response = await self._respond(request, seen)
        except _Rejection as error:
            response = JSONResponse(
                {"error": error.code, "message": str(error)}, status_code=error.status, headers=error.headers
            )
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
            raise _Rejection(400, "bad_request", "missing required field: model")
        seen.model = model
        if model not in KNOWN_MODELS:
            raise _Rejection(
                404, "not_found", f"model {model!r} not found; available models: {', '.join(KNOWN_MODELS)}"
            )
        if self.config.allowed_models is not None and model not in self.config.allowed_models:
            raise _Rejection(403, "forbidden", f"this key has no access to model {model!r}")
        query, documents, top_n = _validated_fields(body, self.config.max_documents)
        seen.query, seen.documents, seen.top_n = query, tuple(documents), top_n
        self._admit(model)
        fault = self._choose_fault(request, query)
        seen.fault = str(fault) if fault else None
        if self.config.added_latency_seconds:
            await asyncio.sleep(self.config.added_latency_seconds)
        if fault is not None:
            faulty = await self._apply(fault)
            if faulty is not None:
                return faulty
        scores = await run_in_threadpool(self.scorer().score, query, documents)
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
            raise _Rejection(401, "unauthorized", "missing Authorization header; expected 'Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        matches = hmac.compare_digest(token.strip().encode("utf-8"), self.config.api_key.encode("utf-8"))
        if scheme.lower() != "bearer" or not matches:
            raise _Rejection(401, "unauthorized", "invalid bearer token")

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise _Rejection(400, "bad_request", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Rejection(400, "bad_request", "request body must be a JSON object")
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
        raise self._rate_limited(
            f"rate limit of {limit} requests per minute exceeded for model {model!r}", wait
        )

    def _rate_limited(self, message: str, retry_after: float) -> _Rejection:
        headers = (
            None if self.config.omit_retry_after else {"Retry-After": str(max(1, math.ceil(retry_after)))}
        )
        return _Rejection(429, "rate_limited", message, headers)

    def _choose_fault(self, request: Request, query: str) -> Fault | None:
        header = request.headers.get(FAULT_HEADER)
        if header and self.config.test_mode:
            try:
                return Fault.parse(header)
            except ValueError as error:
                raise _Rejection(400, "bad_request", f"{FAULT_HEADER}: {error}") from None
        queued = self.faults.take(query)
        if queued is not None:
            return queued
        config = self.config
        if not (config.error_rate or config.timeout_rate or config.malformed_rate):
            return None
        with self._rng_lock:
            draw = self._rng.random()
        for kind, rate in (
            ("500", config.error_rate),
            ("timeout", config.timeout_rate),
            ("malformed", config.malformed_rate),
        ):
            if draw < rate:
                return Fault(kind)
            draw -= rate
        return None

    async def _apply(self, fault: Fault) -> Response | None:
        """Act out ``fault``; return the response to send, or None to answer normally."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_seconds)
            return None
        if fault.kind == "500":
            return JSONResponse(
                {"error": "internal_error", "message": "injected fault: internal error"}, status_code=500
            )
        if fault.kind == "400":
            raise _Rejection(400, "bad_request", "injected fault: the service cannot process this query")
        if fault.kind == "429":
            raise self._rate_limited(
                "injected fault: rate limit exceeded", self.config.fault_retry_after_seconds
            )
        if fault.kind == "malformed":
            return Response(MALFORMED_BODY, status_code=200, media_type="application/json")
        if fault.kind == "garbled":
            return Response(
                GARBLED_BODY, status_code=200, media_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        deadline = time.monotonic() + self.config.hang_seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(_HANG_POLL_SECONDS)
        return JSONResponse(
            {"error": "timeout", "message": "injected fault: upstream timeout"}, status_code=504
        )


def _validated_fields(body: dict[str, Any], max_documents: int) -> tuple[str, list[str], int | None]:
    """query, documents and top_n (capped at the document count), or a 400."""
    if "query" not in body:
        raise _Rejection(400, "bad_request", "missing required field: query")
    query = body["query"]
    if not isinstance(query, str) or not query.strip():
        raise _Rejection(400, "bad_request", "query must be a non-empty string")
    if "documents" not in body:
        raise _Rejection(400, "bad_request", "missing required field: documents")
    documents = body["documents"]
    if not isinstance(documents, list) or not all(isinstance(document, str) for document in documents):
        raise _Rejection(400, "bad_request", "documents must be a list of strings")
    if not documents:
        raise _Rejection(400, "bad_request", "documents must not be empty")
    if len(documents) > max_documents:
        raise _Rejection(
            400, "bad_request", f"too many documents: {len(documents)} (at most {max_documents} per request)"
        )
    top_n = body.get("top_n")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        raise _Rejection(400, "bad_request", f"top_n must be a positive integer, got {top_n!r}")
    return query, documents, None if top_n is None else min(top_n, len(documents))


class LocalRerankService:
    """Runs a :class:`RerankService` under uvicorn in a background thread; use as a context manager."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scorer: LocalRelevanceScorer | None = None,
        warm: bool = False,
    ) -> None:
        self.service = RerankService(config, scorer)
        self.host = host
        self._requested_port = port
        self._warm = warm
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("LocalRerankService is not running")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[LoggedRequest]:
        return self.service.requests

    @property
    def faults(self) -> FaultPlan:
        return self.service.faults

    def start(self, ready_timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("LocalRerankService is already running")
        if self._warm:
            self.service.warm()
        # Binding here (port 0 = any free port) makes the port known before uvicorn starts.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._requested_port))
        config = uvicorn.Config(
            self.service.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="local-rerank-service",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"local rerank service did not start on {self.host}:{self._requested_port}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        self.service.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> LocalRerankService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_service(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    config: ServiceConfig,
    warm: bool = True,
    scorer: LocalRelevanceScorer | None = None,
) -> None:
    """Serve the local rerank service in the foreground until interrupted."""
    service = RerankService(config, scorer)
    if warm:
        service.warm()
    log.info("local rerank service on http://%s:%d%s", host, port, RERANK_PATH)
    uvicorn.run(service.app, host=host, port=port, log_level="info")
