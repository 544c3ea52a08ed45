"""Client for the Heroku Inference ``/v1/rerank`` endpoint (and the local service that mimics it).

One :class:`RerankClient` holds one pooled ``httpx.Client`` and one
:class:`RequestRateLimiter`, so every thread using it shares connections and stays
under the model's requests-per-minute limit together, paced evenly. Transient failures
(429, 5xx, timeouts, refused connections, a 200 whose body is cut off) are retried with
backoff within bounded attempts and time; errors that would recur on every request
(401, 403, 404, and a 400 that rejects top_n or the number of documents) are raised at
once as :class:`RerankConfigurationError` with a message that names what to fix. A 400
caused by one query's content fails only that query.

The API key is checked before anything is sent (no whitespace, control or non-ASCII
characters, which the HTTP layer would refuse by quoting the header) and then lives only in
the ``Authorization`` header of the pooled client (httpx masks it in reprs). Every message
built from server or transport text passes through a :class:`~pipeline.credentials.Redactor`,
which removes the key in its raw, escaped and encoded forms, in case a server echoes it back.
What a failed query publishes is its error's ``code`` (:mod:`pipeline.rerank.errors`), never
a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from pipeline.credentials import Redactor, check_secret, http_log_redaction
from pipeline.rerank.contract import (
    KNOWN_MODELS,
    MAX_DOCUMENTS_PER_REQUEST,
    RATE_WINDOW_SECONDS,
    RERANK_PATH,
    requests_per_minute_for,
)
from pipeline.rerank.errors import (
    TIMEOUT,
    RerankBadRequest,
    RerankConfigurationError,
    RerankError,
    RerankForbidden,
    RerankModelNotFound,
    RerankProtocolError,
    RerankRateLimited,
    RerankServerError,
    RerankSettingRejected,
    RerankUnauthorized,
    RerankUnavailable,
)
from pipeline.tokens import truncate_to_tokens

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_READ_TIMEOUT_SECONDS = 60.0
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_READ_TIMEOUT_SECONDS, connect=DEFAULT_CONNECT_TIMEOUT_SECONDS)
# Cohere truncates long documents itself; cutting them here keeps request bodies small.
DEFAULT_MAX_DOCUMENT_TOKENS = 4000
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_TOTAL_SECONDS = 120.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
# Retry-After counts whole seconds, so "0" is a wait rounded down, not an invitation to hammer.
RETRY_AFTER_FLOOR_SECONDS = 1.0
# The limiter paces at this share of the published limit. It stamps when a request leaves, the
# server when it arrives: 2% of a minute (1.2 s) absorbs that jitter, so no request lands inside
# the window of the one sent a full limit earlier.
DEFAULT_PACING_SHARE = 0.98
_SERVER_TEXT_LIMIT = 500
# How servers word a 400 for a setting every request shares, as opposed to one query's content.
_TOP_N_REJECTED = re.compile(r"\btop_n\b")
_DOCUMENT_COUNT_REJECTED = re.compile(
    r"too many documents|number of documents|documents?\b[^.]*\b(?:limit|exceed|maximum|at most|more than)"
)
_DOCUMENT_LENGTH_REJECTED = re.compile(r"token|too long|too large|length")
# x-ratelimit-reset values above this are Unix timestamps rather than delays.
_EPOCH_THRESHOLD = 1_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- results --------------------------------------------------------------------------------


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
            results=tuple(_ranked(results)),
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
        _check_top_n(self.top_n)


@dataclass(frozen=True)
class RerankOutcome:
    """One query's result in :meth:`RerankClient.rerank_many`: a ``response`` or an ``error``.

    ``error`` is the failure's code (``http_401``, ``timeout``, ...: :mod:`pipeline.rerank.errors`),
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
    def failed(cls, query_id: str, error: RerankError) -> RerankOutcome:
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


# --- cache ----------------------------------------------------------------------------------


class RerankCache(Protocol):
    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


class InMemoryRerankCache:
    """A dict behind a lock; the durable cache lives in the state store."""

    def __init__(self) -> None:
        self._values: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._values.get(key)

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._values[key] = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def cache_key(endpoint: str, model: str, query: str, documents: Sequence[str], top_n: int | None) -> str:
    """sha256 over the endpoint, model, query, the sorted sha256 of every document, and top_n.

    Sorted because a score depends on which documents are sent, not in which order: an index
    rebuilt after a restart may return the same candidates in another order, and that must not
    bill the query again (the cached scores are keyed by document, see ``to_cache_value``).
    ``endpoint`` is the base URL without credentials (:func:`endpoint_of`): the local service
    and Heroku serve the same model names, and a ranking from one must not be passed off as
    the other's.
    """
    document_hashes = sorted(document_hash(document) for document in documents)
    payload = json.dumps([endpoint, model, query, document_hashes, top_n], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- rate limiter ---------------------------------------------------------------------------


def endpoint_of(base_url: str) -> str:
    """The base URL as it may be shown and hashed: normalised, without a trailing slash or credentials."""
    url = httpx.URL(base_url.strip())
    return str(url.copy_with(username=None, password=None)).rstrip("/")


class RateLimitWaitExceeded(Exception):
    """:meth:`RequestRateLimiter.acquire` would have to wait past the caller's deadline."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"the next free request slot is {wait_seconds:.1f}s away")
        self.wait_seconds = wait_seconds


class RequestRateLimiter:
    """Paces sends evenly: one every ``window_seconds / (requests_per_minute × pacing_share)`` seconds.

    A sliding window would let a whole minute's budget go out back to back, and the server,
    counting by arrival, answers the first request of the next burst that lands inside its
    window with a 429. Even spacing never puts more than ``requests_per_minute × pacing_share``
    sends in any window and sustains exactly that rate, with no credit saved up while idle.

    Thread-safe: each caller reserves the next free slot under the lock and sleeps outside it,
    so waiting workers go in arrival order. :meth:`push_back` (after a 429) moves every caller
    behind the given delay; a caller that already holds an earlier slot takes a new one.
    """

    def __init__(
        self,
        requests_per_minute: int,
        *,
        pacing_share: float = DEFAULT_PACING_SHARE,
        window_seconds: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        if not 0 < pacing_share <= 1:
            raise ValueError(f"pacing_share must be within (0, 1], got {pacing_share}")
        self.requests_per_minute = requests_per_minute
        self.window_seconds = window_seconds
        self.slot_interval = window_seconds / (requests_per_minute * pacing_share)
        self._clock = clock
        self._sleep = sleep
        self._next_slot = float("-inf")
        self._blocked_until = float("-inf")
        self._lock = threading.Lock()

    def acquire(self, deadline: float | None = None) -> float:
        """Block until this caller's slot; return its clock time.

        Raises :class:`RateLimitWaitExceeded`, reserving nothing, when the slot would come after
        ``deadline`` (a clock time): one long Retry-After then fails the callers whose budgets it
        exceeds at once instead of holding them for its whole length.
        """
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_slot, self._blocked_until)
                if deadline is not None and slot > deadline:
                    raise RateLimitWaitExceeded(slot - now)
                self._next_slot = slot + self.slot_interval
            if slot > now:
                self._sleep(slot - now)
            with self._lock:
                if self._blocked_until <= slot:
                    return slot

    def push_back(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


# --- client ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    """HTTP calls spent on one rerank() call, across batches and retries."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


@dataclass(frozen=True)
class _BatchResult:
    results: tuple[RerankResult, ...]
    api_version: str
    is_experimental: bool
    search_units: int


@dataclass
class _Attempt:
    """Why one attempt failed and how long to wait before the next."""

    error: RerankError
    delay: float


class RerankClient:
    """Sync client for ``POST {base_url}/v1/rerank``; one instance may be shared by many threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        requests_per_minute: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_total_seconds: float = DEFAULT_MAX_TOTAL_SECONDS,
        max_document_tokens: int | None = DEFAULT_MAX_DOCUMENT_TOKENS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("RERANK_URL is empty: set it to the rerank service's base URL")
        if not api_key:
            raise ValueError("RERANK_KEY is empty: set it to the rerank service's API key")
        check_secret("RERANK_KEY", api_key)
        if not model:
            raise ValueError("RERANK_MODEL_ID is empty: use one of " + ", ".join(KNOWN_MODELS))
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_total_seconds <= 0:
            raise ValueError(f"max_total_seconds must be positive, got {max_total_seconds}")
        if max_document_tokens is not None and max_document_tokens < 1:
            raise ValueError(f"max_document_tokens must be at least 1, got {max_document_tokens}")
        # Credentials in the URL would otherwise show in messages and the cache key.
        self.base_url = endpoint_of(base_url)
        self.model = model
        self.max_attempts = max_attempts
        self.max_total_seconds = max_total_seconds
        self.max_document_tokens = max_document_tokens
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._redactor = Redactor(api_key)
        http_log_redaction.register(self._redactor)
        self.limiter = RequestRateLimiter(
            requests_per_minute or requests_per_minute_for(model), clock=clock, sleep=sleep
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"RerankClient(base_url={self.base_url!r}, model={self.model!r})"

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- public API -------------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> RerankResponse:
        """Rank ``documents`` for ``query``; more than 1,000 documents are sent in batches and merged."""
        _check_top_n(top_n)
        return self._rerank_prepared(query, self.prepare_documents(documents), top_n)

    def rerank_many(
        self,
        requests: Sequence[RerankRequest],
        *,
        max_workers: int = 8,
        cache: RerankCache | None = None,
        on_result: Callable[[RerankOutcome], None] | None = None,
    ) -> list[RerankOutcome]:
        """Rerank every request in parallel, in request order; one query's failure is its own outcome.

        A configuration error (401, 403, 404, or a 400 rejecting top_n or the document
        count) stops every query not yet sent and is raised: all of them would fail the
        same way. Failures are never cached, so a rerun sends only them. The cache and ``on_result`` are
        only called from the calling thread, so neither needs to be thread-safe.
        """
        outcomes: list[RerankOutcome | None] = [None] * len(requests)
        aborted = threading.Event()

        def finish(position: int, outcome: RerankOutcome) -> None:
            outcomes[position] = outcome
            if on_result is not None:
                on_result(outcome)

        def run(query: str, documents: list[str], top_n: int | None) -> RerankResponse | None:
            # Workers check and set the flag themselves so an abort does not wait for the main thread.
            if aborted.is_set():
                return None
            try:
                return self._rerank_prepared(query, documents, top_n)
            except RerankConfigurationError:
                aborted.set()
                raise

        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rerank")
        pending: dict[Future[RerankResponse | None], tuple[int, str, list[str]]] = {}
        try:
            for position, request in enumerate(requests):
                if aborted.is_set():
                    break
                documents = self.prepare_documents(request.documents)
                key = cache_key(self.base_url, self.model, request.query, documents, request.top_n)
                cached = self._cached_response(cache, key, documents)
                if cached is not None:
                    finish(position, RerankOutcome.succeeded(request.query_id, cached, cached=True))
                    continue
                future = pool.submit(run, request.query, documents, request.top_n)
                pending[future] = (position, key, documents)
            for future in as_completed(pending):
                position, key, documents = pending[future]
                query_id = requests[position].query_id
                try:
                    response = future.result()
                except RerankConfigurationError:
                    raise
                except RerankError as error:
                    finish(position, RerankOutcome.failed(query_id, error))
                    continue
                if response is None:
                    continue
                if cache is not None:
                    cache.put(key, response.to_cache_value(documents))
                finish(position, RerankOutcome.succeeded(query_id, response))
        finally:
            # Requests already in flight finish their current call; queued ones are dropped.
            pool.shutdown(wait=True, cancel_futures=True)
        return [outcome for outcome in outcomes if outcome is not None]

    def prepare_documents(self, documents: Sequence[str]) -> list[str]:
        """The documents as they will be sent: each cut to ``max_document_tokens`` tokens."""
        if isinstance(documents, str):
            raise TypeError("documents must be a sequence of strings, not one string")
        if self.max_document_tokens is None:
            return list(documents)
        return [truncate_to_tokens(document, self.max_document_tokens) for document in documents]

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _cached_response(cache: RerankCache | None, key: str, documents: Sequence[str]) -> RerankResponse | None:
        value = cache.get(key) if cache is not None else None
        if value is None:
            return None
        try:
            return RerankResponse.from_cache_value(value, documents)
        except (KeyError, IndexError, TypeError, ValueError):
            log.warning("ignoring unreadable rerank cache entry %s", key)
            return None

    def _rerank_prepared(self, query: str, documents: list[str], top_n: int | None) -> RerankResponse:
        started = self._clock()
        tally = _Tally()
        try:
            if len(documents) <= MAX_DOCUMENTS_PER_REQUEST:
                batches = [self._call(query, documents, top_n, tally)] if documents else []
                results = batches[0].results if batches else ()
            else:
                # Every document needs a score to merge batches, so top_n is applied afterwards.
                batches = []
                merged: list[RerankResult] = []
                for offset in range(0, len(documents), MAX_DOCUMENTS_PER_REQUEST):
                    batch = self._call(
                        query, documents[offset : offset + MAX_DOCUMENTS_PER_REQUEST], None, tally
                    )
                    batches.append(batch)
                    merged.extend(RerankResult(offset + r.index, r.relevance_score) for r in batch.results)
                results = tuple(_ranked(merged)[:top_n])
        except RerankError as error:
            error.requests, error.retries, error.rate_limited = (
                tally.requests,
                tally.retries,
                tally.rate_limited,
            )
            raise
        return RerankResponse(
            results=results,
            api_version=batches[0].api_version if batches else "",
            is_experimental=batches[0].is_experimental if batches else False,
            search_units=sum(batch.search_units for batch in batches),
            requests=tally.requests,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            latency_seconds=self._clock() - started,
        )

    def _call(self, query: str, documents: list[str], top_n: int | None, tally: _Tally) -> _BatchResult:
        """One logical request, retried within ``max_attempts`` and ``max_total_seconds``."""
        body: dict[str, Any] = {"model": self.model, "query": query, "documents": documents}
        if top_n is not None:
            # The results stop at the document count anyway; a stricter server need not see more.
            body["top_n"] = min(top_n, len(documents))
        started = self._clock()
        deadline = started + self.max_total_seconds
        failed: _Attempt | None = None
        attempt_number = 0
        while True:
            try:
                self.limiter.acquire(deadline)
            except RateLimitWaitExceeded as held:
                elapsed = self._clock() - started
                if failed is not None:
                    raise self._gave_up(failed.error, attempt_number, elapsed) from None
                raise RerankRateLimited(
                    f"not sent: requests to {self.base_url} for model {self.model} are held for another "
                    f"{held.wait_seconds:.0f}s after a rate limit (HTTP 429), longer than the "
                    f"{self.max_total_seconds:g}s allowed per request (max_total_seconds)"
                ) from None
            attempt_number += 1
            tally.requests += 1
            outcome = self._attempt(body, attempt_number, tally)
            if isinstance(outcome, _BatchResult):
                return outcome
            failed = outcome
            if not failed.error.retryable:
                raise failed.error
            elapsed = self._clock() - started
            if attempt_number >= self.max_attempts or elapsed + failed.delay > self.max_total_seconds:
                raise self._gave_up(failed.error, attempt_number, elapsed)
            log.warning(
                "rerank request to %s (model %s) failed: %s; retry %d of %d in %.2fs",
                self.base_url,
                self.model,
                failed.error,
                attempt_number,
                self.max_attempts - 1,
                failed.delay,
            )
            tally.retries += 1
            self._sleep(failed.delay)

    def _attempt(self, body: dict[str, Any], attempt_number: int, tally: _Tally) -> _BatchResult | _Attempt:
        """Send once: the parsed result, or why it failed and how long to wait before the next attempt.

        Every failure leaves through here, so its message is redacted here, whatever server or
        transport text it quotes.
        """
        outcome = self._send(body, attempt_number, tally)
        if isinstance(outcome, _Attempt):
            outcome.error.args = (self._redactor(str(outcome.error)),)
        return outcome

    def _send(self, body: dict[str, Any], attempt_number: int, tally: _Tally) -> _BatchResult | _Attempt:
        try:
            response = self._http.post(RERANK_PATH, json=body)
        except httpx.TransportError as exc:
            error = RerankUnavailable(
                self._unreachable(exc), code=TIMEOUT if isinstance(exc, httpx.TimeoutException) else None
            )
            return _Attempt(error, self._backoff(attempt_number))
        except httpx.DecodingError as exc:
            # A Content-Encoding the body does not match: damaged on the way, like a cut-off body.
            error = RerankProtocolError(f"{self.base_url} sent a body that could not be decoded: {exc}", retryable=True)
            return _Attempt(error, self._backoff(attempt_number))
        if response.status_code != 200:
            return self._failed_status(response, body, attempt_number, tally)
        self._respect_rate_headers(response)
        try:
            return self._parse(response, body)
        except RerankProtocolError as error:
            return _Attempt(error, self._backoff(attempt_number))

    def _failed_status(
        self, response: httpx.Response, body: dict[str, Any], attempt_number: int, tally: _Tally
    ) -> _Attempt:
        """Map a non-200 response to an error and the wait before a retry (if it is retryable)."""
        status = response.status_code
        if status == 429:
            tally.rate_limited += 1
            delay = self._rate_limit_delay(response, attempt_number)
            # The quota is the model's, not this query's: every worker waits, and callers whose
            # time budget the wait exceeds give up at once (RequestRateLimiter.acquire).
            self.limiter.push_back(delay)
            return _Attempt(
                RerankRateLimited(f"{self.base_url} rate-limited model {self.model} (HTTP 429)", status_code=status),
                delay,
            )
        detail = self._server_message(response)
        if status >= 500:
            return _Attempt(
                RerankServerError(f"{self.base_url} failed with HTTP {status}: {detail}", status_code=status),
                self._backoff(attempt_number),
            )
        return _Attempt(self._rejection(response, detail, body), 0.0)

    def _rejection(self, response: httpx.Response, detail: str, body: dict[str, Any]) -> RerankError:
        """The error for a status that no retry would change."""
        status = response.status_code
        if status == 400:
            return self._bad_request(detail, body)
        if status == 401:
            return RerankUnauthorized(
                f"RERANK_KEY was rejected by {self.base_url}: set RERANK_KEY to the key of the model attached "
                "to your app (heroku config:get RERANK_KEY)",
                status_code=status,
            )
        if status == 403:
            return RerankForbidden(
                f"RERANK_KEY has no access to model {self.model}; attach the model with "
                "`heroku ai:models:attach` / check RERANK_MODEL_ID",
                status_code=status,
            )
        if status == 404:
            return RerankModelNotFound(
                f"unknown model {self.model}; valid: {', '.join(KNOWN_MODELS)}; check RERANK_MODEL_ID "
                f"(or RERANK_URL={self.base_url} does not serve {RERANK_PATH}); server said: {detail}",
                status_code=status,
            )
        if status == 413:
            return RerankBadRequest(
                f"{self.base_url} refused the request for this query as too large (HTTP 413): {detail}; "
                + self._length_hint(),
                status_code=status,
            )
        if 400 <= status < 500:
            return RerankBadRequest(
                f"{self.base_url} rejected the rerank request (HTTP {status}): {detail}", status_code=status
            )
        return RerankProtocolError(
            f"unexpected HTTP {status} from {self.base_url}{RERANK_PATH}"
            f" (Location: {response.headers.get('location', '-')}); check RERANK_URL",
            status_code=status,
        )

    def _bad_request(self, detail: str, body: dict[str, Any]) -> RerankError:
        """A 400 that rejects top_n or the document count fails every query alike; any other, this query."""
        words = detail.lower()
        about_length = _DOCUMENT_LENGTH_REJECTED.search(words) is not None
        if "top_n" in body and _TOP_N_REJECTED.search(words):
            return RerankSettingRejected(
                f"{self.base_url} rejected top_n={body['top_n']} (HTTP 400): {detail}",
                setting="top_n",
                status_code=400,
            )
        if _DOCUMENT_COUNT_REJECTED.search(words) and not about_length:
            return RerankSettingRejected(
                f"{self.base_url} rejected {len(body['documents'])} documents in one request (HTTP 400): {detail}",
                setting="documents_per_request",
                status_code=400,
            )
        hint = f"; {self._length_hint()}" if about_length else ""
        return RerankBadRequest(
            f"{self.base_url} rejected the rerank request for this query (HTTP 400): {detail}{hint}", status_code=400
        )

    def _length_hint(self) -> str:
        if self.max_document_tokens is None:
            return "documents are sent uncut: set max_document_tokens"
        return f"documents are cut to max_document_tokens={self.max_document_tokens} tokens: lower it"

    def _unreachable(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            reason = "no connection within the connect timeout (ConnectTimeout)"
        elif isinstance(exc, httpx.TimeoutException):
            reason = f"no response within the read timeout ({type(exc).__name__})"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return f"could not reach RERANK_URL={self.base_url}: {reason}"

    def _gave_up(self, error: RerankError, attempts: int, elapsed: float) -> RerankError:
        return type(error)(
            f"{error} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s)",
            status_code=error.status_code,
            code=error.code,
        )

    def _backoff(self, attempt_number: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt_number - 1))
        return self._rng.uniform(0, ceiling)

    def _rate_limit_delay(self, response: httpx.Response, attempt_number: int) -> float:
        hinted = _hinted_delay(response.headers)
        if hinted is not None:
            # No jitter: the limiter spreads the workers that all resume at the same instant.
            return max(RETRY_AFTER_FLOOR_SECONDS, hinted)
        # No hint (Heroku may omit one): at least the limiter's slot spacing, doubling per attempt.
        floor = min(BACKOFF_CAP_SECONDS, self.limiter.slot_interval * 2**attempt_number)
        return floor + self._rng.uniform(0, floor)

    def _respect_rate_headers(self, response: httpx.Response) -> None:
        """When a success says the quota is spent, hold every thread until it resets."""
        remaining = _first_header(
            response.headers,
            ("x-ratelimit-remaining", "x-ratelimit-remaining-requests", "ratelimit-remaining"),
        )
        if remaining is None:
            return
        try:
            exhausted = float(remaining) <= 0
        except ValueError:
            return
        reset = _reset_delay(response.headers)
        if exhausted and reset:
            self.limiter.push_back(reset)

    def _parse(self, response: httpx.Response, body: dict[str, Any]) -> _BatchResult:
        document_count = len(body["documents"])
        expected = body.get("top_n", document_count)

        def broken(reason: str, *, retryable: bool = False) -> RerankProtocolError:
            return RerankProtocolError(
                f"{self.base_url} returned HTTP 200 with {reason}", status_code=200, retryable=retryable
            )

        try:
            payload = response.json()
        except ValueError:
            # Cut off or garbled on the way (the local service's "malformed" fault): worth another try.
            raise broken("a body that is not JSON", retryable=True) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise broken("no 'results' list")
        results: list[RerankResult] = []
        for item in payload["results"]:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score") if isinstance(item, dict) else None
            if (
                type(index) is not int
                or not isinstance(score, (int, float))
                or isinstance(score, bool)
                or not math.isfinite(score)
            ):
                raise broken(f"a malformed result {self._quoted(item)}")
            if not 0 <= index < document_count:
                raise broken(f"result index {index} outside the {document_count} documents sent")
            results.append(RerankResult(index, float(score)))
        if len({result.index for result in results}) != len(results):
            raise broken("duplicate result indexes")
        if len(results) != expected:
            raise broken(f"{len(results)} results where {expected} were expected")
        meta = payload.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        units = billed.get("search_units") if isinstance(billed, dict) else None
        if type(units) is not int or units < 0:
            raise broken("no integer meta.billed_units.search_units")
        api_version = _api_version(meta.get("api_version"))
        if api_version is None:
            raise broken(f"a malformed meta.api_version {self._quoted(meta.get('api_version'))}")
        return _BatchResult(
            results=tuple(_ranked(results)),
            api_version=api_version[0],
            is_experimental=api_version[1],
            search_units=units,
        )

    def _server_message(self, response: httpx.Response) -> str:
        """The error text a server put in its body, shortened and with the key removed."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message: Any = None
        if isinstance(payload, dict):
            message = payload.get("message") or payload.get("error") or payload.get("detail")
            if isinstance(message, dict):
                message = message.get("message") or json.dumps(message)
        text = str(message) if message else response.text or f"HTTP {response.status_code} with an empty body"
        # Redacted before it is cut: a cut through the key would leave a piece no redaction finds.
        return self._redactor(text)[:_SERVER_TEXT_LIMIT]

    def _quoted(self, value: Any) -> str:
        """A piece of a server's answer as an error quotes it: redacted, then shortened.

        Each string is redacted before the piece is formatted, since formatting escapes it again.
        """

        def scrubbed(part: Any) -> Any:
            if isinstance(part, str):
                return self._redactor(part)
            if isinstance(part, dict):
                return {scrubbed(key): scrubbed(item) for key, item in part.items()}
            if isinstance(part, list):
                return [scrubbed(item) for item in part]
            return part

        return repr(self._redactor(str(scrubbed(value)))[:100])


def _check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be at least 1 or None, got {top_n}")


def _ranked(results: Sequence[RerankResult]) -> list[RerankResult]:
    """Highest score first; ties keep the lower index first so order is deterministic."""
    return sorted(results, key=lambda result: (-result.relevance_score, result.index))


def _api_version(value: Any) -> tuple[str, bool] | None:
    """``meta.api_version`` as (version, is_experimental); None when it is not the contract's shape.

    The field is informational, so a missing one or a bare version (``"2"``) does not fail a
    paid request; anything else (a list, a version that is neither text nor a number) means the
    server is not speaking this contract.
    """
    if value is None:
        return "", False
    if isinstance(value, dict):
        version, experimental = value.get("version", ""), value.get("is_experimental", False)
        if not isinstance(experimental, bool):
            return None
    else:
        version, experimental = value, False
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        return None
    return str(version), experimental


def _first_header(headers: httpx.Headers, names: Sequence[str]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value.strip()
    return None


def _hinted_delay(headers: httpx.Headers) -> float | None:
    """Seconds a 429 asks us to wait: Retry-After first, then an x-ratelimit-reset-style header."""
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return _reset_delay(headers)


def _reset_delay(headers: httpx.Headers) -> float | None:
    """Parse x-ratelimit-reset as delta seconds, a Unix timestamp, or a duration like ``1m30s``."""
    value = _first_header(headers, ("x-ratelimit-reset", "x-ratelimit-reset-requests", "ratelimit-reset"))
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(amount + unit for amount, unit in parts) != value:
            return None
        return sum(float(amount) * _DURATION_UNITS[unit] for amount, unit in parts)
    if number > _EPOCH_THRESHOLD:
        return max(0.0, number - time.time())
    return max(0.0, number)
