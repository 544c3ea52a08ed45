"""Client for the Heroku Inference ``/v1/rerank`` endpoint (and the local service that mimics it).

One :class:`RerankClient` holds one pooled ``httpx.Client`` and one
:class:`RequestRateLimiter`, so every thread using it shares connections and stays
under the model's requests-per-minute limit together. Transient failures (429, 5xx,
timeouts, refused connections, one malformed 200) are retried with backoff; errors
that would recur on every request (400, 401, 403, 404) are raised at once with a
message that names the config var to fix.

The API key lives only in the ``Authorization`` header of the pooled client (httpx masks
it in reprs); every message built from server or transport text passes through
:meth:`RerankClient._redact` in case a server echoes the token back.
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

from pipeline.rerank.contract import (
    KNOWN_MODELS,
    MAX_DOCUMENTS_PER_REQUEST,
    RATE_WINDOW_SECONDS,
    RERANK_PATH,
    requests_per_minute_for,
)
from pipeline.tokens import truncate_to_tokens

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Cohere truncates long documents itself; cutting them here keeps request bodies small.
DEFAULT_MAX_DOCUMENT_TOKENS = 4000
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
# A malformed 200 is most likely a proxy hiccup; a second one means something is really wrong.
MAX_PROTOCOL_RETRIES = 1
_SERVER_TEXT_LIMIT = 500
# x-ratelimit-reset values above this are Unix timestamps rather than delays.
_EPOCH_THRESHOLD = 1_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- errors ---------------------------------------------------------------------------------


class RerankError(Exception):
    """Base of every rerank failure; ``requests``, ``retries``, ``rate_limited`` count the calls spent."""

    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0


class RerankConfigurationError(RerankError):
    """The key or model is wrong, so every further request would fail the same way."""


class RerankBadRequest(RerankError):
    """HTTP 400 (or another unexpected 4xx): the request itself was rejected."""


class RerankUnauthorized(RerankConfigurationError):
    """HTTP 401."""


class RerankForbidden(RerankConfigurationError):
    """HTTP 403."""


class RerankModelNotFound(RerankConfigurationError):
    """HTTP 404."""


class RerankRateLimited(RerankError):
    """HTTP 429 on every attempt."""

    retryable = True


class RerankServerError(RerankError):
    """HTTP 5xx on every attempt."""

    retryable = True


class RerankUnavailable(RerankError):
    """Connection refused, reset or timed out on every attempt."""

    retryable = True


class RerankProtocolError(RerankError):
    """A response the contract does not allow: malformed 200 body or an unexpected status."""

    retryable = True


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

    def to_cache_value(self) -> dict[str, Any]:
        """JSON-serialisable form stored by a :class:`RerankCache`."""
        return {
            "results": [[result.index, result.relevance_score] for result in self.results],
            "api_version": self.api_version,
            "is_experimental": self.is_experimental,
        }

    @classmethod
    def from_cache_value(cls, value: dict[str, Any]) -> RerankResponse:
        """A response served from cache: no HTTP call, nothing billed."""
        return cls(
            results=tuple(RerankResult(int(index), float(score)) for index, score in value["results"]),
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

    ``error`` is ``"<ExceptionType>: <message>"`` (message already free of the key).
    """

    query_id: str
    response: RerankResponse | None = None
    error: str | None = None
    error_type: str | None = None
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
            error=f"{type(error).__name__}: {error}",
            error_type=type(error).__name__,
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


def cache_key(model: str, query: str, documents: Sequence[str], top_n: int | None) -> str:
    """sha256 over the model, query, each document's sha256 in order, and top_n."""
    document_hashes = [hashlib.sha256(document.encode("utf-8")).hexdigest() for document in documents]
    payload = json.dumps([model, query, document_hashes, top_n], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- rate limiter ---------------------------------------------------------------------------


class RequestRateLimiter:
    """Sliding-window limiter: at most ``requests_per_minute`` sends in any ``window_seconds``.

    Thread-safe. :meth:`push_back` (after a 429) blocks every caller until the given
    delay has passed, so concurrent workers back off together instead of each
    discovering the limit separately.
    """

    def __init__(
        self,
        requests_per_minute: int,
        *,
        window_seconds: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self.window_seconds = window_seconds
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._lock = threading.Lock()

    @property
    def slot_interval(self) -> float:
        """Average spacing between requests at the full rate."""
        return self.window_seconds / self.requests_per_minute

    def acquire(self) -> float:
        """Block until a request may be sent; record and return the clock time it was admitted."""
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    self._sent.append(now)
                    return now
            # Sleep outside the lock and re-check: a push_back may arrive meanwhile.
            self._sleep(delay)

    def push_back(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _delay(self, now: float) -> float:
        while self._sent and self._sent[0] <= now - self.window_seconds:
            self._sent.popleft()
        delay = self._blocked_until - now
        if len(self._sent) >= self.requests_per_minute:
            delay = max(delay, self._sent[0] + self.window_seconds - now)
        return delay


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
        max_attempts: int = 6,
        max_total_seconds: float = 120.0,
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
        if not model:
            raise ValueError("RERANK_MODEL_ID is empty: use one of " + ", ".join(KNOWN_MODELS))
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_document_tokens is not None and max_document_tokens < 1:
            raise ValueError(f"max_document_tokens must be at least 1, got {max_document_tokens}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_attempts = max_attempts
        self.max_total_seconds = max_total_seconds
        self.max_document_tokens = max_document_tokens
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
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

        A configuration error (401, 403, 404) stops every query not yet sent and is
        raised: all of them would fail the same way. The cache and ``on_result`` are
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
        pending: dict[Future[RerankResponse | None], tuple[int, str]] = {}
        try:
            for position, request in enumerate(requests):
                if aborted.is_set():
                    break
                documents = self.prepare_documents(request.documents)
                key = cache_key(self.model, request.query, documents, request.top_n)
                cached = self._cached_response(cache, key)
                if cached is not None:
                    finish(position, RerankOutcome.succeeded(request.query_id, cached, cached=True))
                    continue
                future = pool.submit(run, request.query, documents, request.top_n)
                pending[future] = (position, key)
            for future in as_completed(pending):
                position, key = pending[future]
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
                    cache.put(key, response.to_cache_value())
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
    def _cached_response(cache: RerankCache | None, key: str) -> RerankResponse | None:
        value = cache.get(key) if cache is not None else None
        if value is None:
            return None
        try:
            return RerankResponse.from_cache_value(value)
        except (KeyError, TypeError, ValueError):
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
            body["top_n"] = top_n
        expected = min(top_n, len(documents)) if top_n is not None else len(documents)
        started = self._clock()
        protocol_failures = 0
        attempt_number = 0
        while True:
            attempt_number += 1
            self.limiter.acquire()
            tally.requests += 1
            try:
                response = self._http.post(RERANK_PATH, json=body)
            except httpx.TransportError as exc:
                attempt = _Attempt(RerankUnavailable(self._unreachable(exc)), self._backoff(attempt_number))
            else:
                if response.status_code == 200:
                    self._respect_rate_headers(response)
                    try:
                        return self._parse(response, len(documents), expected)
                    except RerankProtocolError as error:
                        protocol_failures += 1
                        if protocol_failures > MAX_PROTOCOL_RETRIES:
                            raise
                        attempt = _Attempt(error, self._backoff(attempt_number))
                else:
                    attempt = self._failed_status(response, attempt_number, tally)
            elapsed = self._clock() - started
            if attempt_number >= self.max_attempts or elapsed + attempt.delay > self.max_total_seconds:
                raise self._gave_up(attempt.error, attempt_number, elapsed)
            log.warning(
                "rerank request to %s (model %s) failed: %s; retry %d of %d in %.2fs",
                self.base_url,
                self.model,
                attempt.error,
                attempt_number,
                self.max_attempts - 1,
                attempt.delay,
            )
            tally.retries += 1
            self._sleep(attempt.delay)

    def _failed_status(self, response: httpx.Response, attempt_number: int, tally: _Tally) -> _Attempt:
        """Map a non-200 response to an error; raise it now unless it is worth retrying."""
        status = response.status_code
        detail = self._server_message(response)
        error: RerankError
        if status == 400:
            error = RerankBadRequest(
                f"{self.base_url} rejected the rerank request (HTTP 400): {detail}", status_code=status
            )
        elif status == 401:
            error = RerankUnauthorized(
                f"RERANK_KEY was rejected by {self.base_url}: check the RERANK_KEY config var",
                status_code=status,
            )
        elif status == 403:
            error = RerankForbidden(
                f"RERANK_KEY has no access to model {self.model}; attach the model with "
                "`heroku ai:models:attach` / check RERANK_MODEL_ID",
                status_code=status,
            )
        elif status == 404:
            error = RerankModelNotFound(
                f"unknown model {self.model}; valid: {', '.join(KNOWN_MODELS)}; check RERANK_MODEL_ID "
                f"(or RERANK_URL={self.base_url} does not serve {RERANK_PATH}); server said: {detail}",
                status_code=status,
            )
        elif status == 429:
            tally.rate_limited += 1
            delay = self._rate_limit_delay(response, attempt_number)
            self.limiter.push_back(delay)
            return _Attempt(
                RerankRateLimited(
                    f"{self.base_url} rate-limited model {self.model} (HTTP 429)", status_code=status
                ),
                delay,
            )
        elif status >= 500:
            return _Attempt(
                RerankServerError(f"{self.base_url} failed with HTTP {status}: {detail}", status_code=status),
                self._backoff(attempt_number),
            )
        elif 400 <= status < 500:
            error = RerankBadRequest(
                f"{self.base_url} rejected the rerank request (HTTP {status}): {detail}", status_code=status
            )
        else:
            error = RerankProtocolError(
                f"unexpected HTTP {status} from {self.base_url}{RERANK_PATH}"
                f" (Location: {response.headers.get('location', '-')}); check RERANK_URL",
                status_code=status,
            )
            error.retryable = False
        raise error

    def _unreachable(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no response within the timeout ({type(exc).__name__})"
        else:
            reason = f"{type(exc).__name__}: {self._redact(str(exc))}"
        return f"could not reach RERANK_URL={self.base_url}: {reason}"

    def _gave_up(self, error: RerankError, attempts: int, elapsed: float) -> RerankError:
        return type(error)(
            f"{error} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s)",
            status_code=error.status_code,
        )

    def _backoff(self, attempt_number: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt_number - 1))
        return self._rng.uniform(0, ceiling)

    def _rate_limit_delay(self, response: httpx.Response, attempt_number: int) -> float:
        hinted = _hinted_delay(response.headers)
        if hinted is not None:
            return hinted
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

    def _parse(self, response: httpx.Response, document_count: int, expected: int) -> _BatchResult:
        def broken(reason: str) -> RerankProtocolError:
            return RerankProtocolError(f"{self.base_url} returned HTTP 200 with {reason}", status_code=200)

        try:
            payload = response.json()
        except ValueError:
            raise broken("a body that is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise broken("no 'results' list")
        results: list[RerankResult] = []
        for item in payload["results"]:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score") if isinstance(item, dict) else None
            if type(index) is not int or not isinstance(score, (int, float)) or isinstance(score, bool):
                raise broken(f"a malformed result {str(item)[:100]!r}")
            if not 0 <= index < document_count:
                raise broken(f"result index {index} outside the {document_count} documents sent")
            results.append(RerankResult(index, float(score)))
        if len({result.index for result in results}) != len(results):
            raise broken("duplicate result indexes")
        if len(results) != expected:
            raise broken(f"{len(results)} results where {expected} were expected")
        meta = payload.get("meta")
        units = meta.get("billed_units", {}).get("search_units") if isinstance(meta, dict) else None
        if type(units) is not int:
            raise broken("no integer meta.billed_units.search_units")
        # api_version is informational; a missing one should not fail a paid request.
        api_version = meta.get("api_version") or {}
        return _BatchResult(
            results=tuple(_ranked(results)),
            api_version=str(api_version.get("version", "")),
            is_experimental=bool(api_version.get("is_experimental", False)),
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
        return self._redact(text[:_SERVER_TEXT_LIMIT])

    def _redact(self, text: str) -> str:
        api_key = self._http.headers["authorization"].removeprefix("Bearer ")
        return text.replace(api_key, "[REDACTED]")


def _check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be at least 1 or None, got {top_n}")


def _ranked(results: Sequence[RerankResult]) -> list[RerankResult]:
    """Highest score first; ties keep the lower index first so order is deterministic."""
    return sorted(results, key=lambda result: (-result.relevance_score, result.index))


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
