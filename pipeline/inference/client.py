"""A paced, retried, redacting JSON-over-HTTP client for one Heroku Inference endpoint.

One :class:`InferenceClient` holds one pooled ``httpx.Client`` and one
:class:`~pipeline.inference.pacing.RequestRateLimiter`, so every thread using it shares
connections and stays under the model's limits together. :meth:`InferenceClient.post` sends
one logical request: it waits for a slot, retries transient failures (429, 5xx, timeouts,
refused connections, a 200 whose body is cut off) within the :class:`RetryPolicy`, follows
``Retry-After`` and ``x-ratelimit-*`` headers, and raises at once what would recur on every
request (401, 403, 404: :class:`~pipeline.inference.errors.InferenceConfigurationError`) with a
message that names the config var to fix. The endpoint layer (rerank, embeddings, chat)
builds the body, estimates its tokens, parses the answer and classifies a 400. Under a
tokens-per-minute limit the pacing ledger follows the server's count: a request's estimate is
replaced by the tokens its answer reports (``counted``), and the ``x-ratelimit-*-tokens``
headers of every 200 add what the server counted beyond the ledger.

The API key is checked before anything is sent (no whitespace, control or non-ASCII
characters, which the HTTP layer would refuse by quoting the header) and then lives only in
the ``Authorization`` header of the pooled client (httpx masks it in reprs). Every failure's
message passes through a :class:`~pipeline.credentials.Redactor` on its way out.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypedDict, TypeVar

import httpx

from pipeline.credentials import Redactor, check_secret, http_log_redaction
from pipeline.inference.endpoint import EndpointContract, endpoint_of
from pipeline.inference.errors import TIMEOUT, InferenceError, InferenceProtocolError
from pipeline.inference.headers import exhausted_quota_delay, rate_limit_hint, tokens_used_in_window
from pipeline.inference.pacing import RateLimitWaitExceeded, RequestRateLimiter
from pipeline.inference.redaction import quoted, server_message
from pipeline.inference.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_TOTAL_SECONDS, RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_READ_TIMEOUT_SECONDS = 60.0
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_READ_TIMEOUT_SECONDS, connect=DEFAULT_CONNECT_TIMEOUT_SECONDS)

Parsed = TypeVar("Parsed")
# (status, the server's redacted message, the body sent) → the error for a 4xx, or None for the default.
Rejection = Callable[[int, str, dict[str, Any]], InferenceError | None]
# A parsed answer → the tokens the server says it counted for the request, or None when it does not say.
TokenCount = Callable[[Any], int | None]


@dataclass
class CallTally:
    """HTTP calls spent on one logical call of the endpoint layer, across batches and retries."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0

    def charge(self, error: InferenceError) -> None:
        """Record on ``error`` what the call spent before it failed."""
        error.requests, error.retries, error.rate_limited = self.requests, self.retries, self.rate_limited


@dataclass(frozen=True)
class _Request(Generic[Parsed]):
    """One logical request as :meth:`InferenceClient.post` was given it, the same on every attempt."""

    body: dict[str, Any]
    parse: Callable[[Any], Parsed]
    tally: CallTally
    tokens: int
    counted: TokenCount | None


@dataclass
class _Attempt:
    """Why one attempt failed and how long to wait before the next."""

    error: InferenceError
    delay: float


class ClientOptions(TypedDict, total=False):
    """How a client waits, retries and reaches its server: every endpoint layer's client takes these keyword
    arguments and hands them to its :class:`InferenceClient` unchanged (defaults: the core's)."""

    timeout: httpx.Timeout | float
    max_attempts: int
    max_total_seconds: float
    transport: httpx.BaseTransport | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    rng: random.Random | None


class EndpointClient:
    """What an endpoint layer's client (rerank, embeddings, chat) shares: one :class:`InferenceClient`, closed
    with it."""

    _inference: InferenceClient

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._inference.close()


class InferenceClient:
    """Sync client for ``POST {base_url}{contract.path}``; one instance may be shared by many threads."""

    def __init__(
        self,
        contract: EndpointContract,
        base_url: str,
        api_key: str,
        model: str,
        *,
        requests_per_minute: int,
        tokens_per_minute: int | None = None,
        rejection: Rejection | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_total_seconds: float = DEFAULT_MAX_TOTAL_SECONDS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url:
            raise ValueError(f"{contract.url_setting} is empty: set it to the {contract.name} service's base URL")
        if not api_key:
            raise ValueError(f"{contract.key_setting} is empty: set it to the {contract.name} service's API key")
        check_secret(contract.key_setting, api_key)
        if not model:
            raise ValueError(f"{contract.model_setting} is empty: use one of " + ", ".join(contract.known_models))
        self.contract = contract
        self.errors = contract.errors
        # Credentials in the URL would otherwise show in messages and cache keys.
        self.base_url = endpoint_of(base_url)
        self.model = model
        self.retry = RetryPolicy(max_attempts=max_attempts, max_total_seconds=max_total_seconds)
        self._rejection = rejection
        self._sleep = sleep
        # The clock requests are paced and timed by (the endpoint layer times its calls by it too).
        self.clock = clock
        self._rng = rng or random.Random()
        self._redactor = Redactor(api_key)
        http_log_redaction.register(self._redactor)
        self.limiter = RequestRateLimiter(
            requests_per_minute, tokens_per_minute=tokens_per_minute, clock=clock, sleep=sleep
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"InferenceClient({self.contract.path}, base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._http.close()

    def post(
        self,
        body: dict[str, Any],
        parse: Callable[[Any], Parsed],
        *,
        tally: CallTally,
        tokens: int = 0,
        counted: TokenCount | None = None,
    ) -> Parsed:
        """Send ``body`` as JSON and return ``parse(<the 200's JSON>)``, retried within the policy.

        ``tokens`` is the endpoint layer's estimate of what the request counts against the
        model's tokens per minute; ``counted`` reads the count the server reports from the parsed
        answer, which then replaces the estimate in the pacing ledger. ``parse`` raises
        :meth:`invalid_response` errors for a body that is not the contract's.
        """
        request = _Request(body, parse, tally, tokens, counted)
        started = self.clock()
        deadline = started + self.retry.max_total_seconds
        failed: _Attempt | None = None
        attempt_number = 0
        while True:
            try:
                slot = self.limiter.acquire(deadline, tokens=tokens)
            except RateLimitWaitExceeded as held:
                elapsed = self.clock() - started
                if failed is not None:
                    raise self._gave_up(failed.error, attempt_number, elapsed) from None
                raise self.errors.rate_limited(
                    f"not sent: requests to {self.base_url} for model {self.model} are held for another "
                    f"{held.wait_seconds:.0f}s after a rate limit (HTTP 429), longer than the "
                    f"{self.retry.max_total_seconds:g}s allowed per request (max_total_seconds)"
                ) from None
            attempt_number += 1
            tally.requests += 1
            outcome = self._attempt(request, attempt_number, slot)
            if not isinstance(outcome, _Attempt):
                return outcome
            failed = outcome
            if not failed.error.retryable:
                raise failed.error
            elapsed = self.clock() - started
            if self.retry.gives_up(attempt_number, elapsed, failed.delay):
                raise self._gave_up(failed.error, attempt_number, elapsed)
            log.warning(
                "%s request to %s (model %s) failed: %s; retry %d of %d in %.2fs",
                self.contract.name,
                self.base_url,
                self.model,
                failed.error,
                attempt_number,
                self.retry.max_attempts - 1,
                failed.delay,
            )
            tally.retries += 1
            self._sleep(failed.delay)

    def invalid_response(self, reason: str, *, retryable: bool = False) -> InferenceProtocolError:
        """The error for a 200 whose body breaks the contract in the way ``reason`` says."""
        return self.errors.protocol_error(
            f"{self.base_url} returned HTTP 200 with {reason}", status_code=200, retryable=retryable
        )

    def quoted(self, value: Any) -> str:
        """A piece of the server's answer as a message may quote it (redacted, shortened)."""
        return quoted(value, self._redactor)

    # --- one attempt ------------------------------------------------------------------------

    def _attempt(self, request: _Request[Parsed], attempt_number: int, slot: float) -> Parsed | _Attempt:
        """Send once (in the pacing slot ``slot``): the parsed result, or why it failed and how long to
        wait before the next attempt.

        Every failure leaves through here, so its message is redacted here, whatever server or
        transport text it quotes.
        """
        outcome = self._send(request, attempt_number, slot)
        if isinstance(outcome, _Attempt):
            outcome.error.args = (self._redactor(str(outcome.error)),)
        return outcome

    def _send(self, request: _Request[Parsed], attempt_number: int, slot: float) -> Parsed | _Attempt:
        try:
            response = self._http.post(self.contract.path, json=request.body)
        except httpx.TransportError as exc:
            error: InferenceError = self.errors.unavailable(
                self._unreachable(exc), code=TIMEOUT if isinstance(exc, httpx.TimeoutException) else None
            )
            return _Attempt(error, self.retry.backoff(attempt_number, self._rng))
        except httpx.DecodingError as exc:
            # A Content-Encoding the body does not match: damaged on the way, like a cut-off body.
            error = self.errors.protocol_error(
                f"{self.base_url} sent a body that could not be decoded: {exc}", retryable=True
            )
            return _Attempt(error, self.retry.backoff(attempt_number, self._rng))
        if response.status_code != 200:
            return self._failed_status(response, request.body, attempt_number, request.tally)
        spent = exhausted_quota_delay(response.headers)
        if spent:
            # The quota is spent: hold every thread until it resets.
            self.limiter.push_back(spent)
        outcome: Parsed | _Attempt
        try:
            try:
                payload = response.json()
            except ValueError:
                # Cut off or garbled on the way (the local service's "malformed" fault): worth another try.
                raise self.invalid_response("a body that is not JSON", retryable=True) from None
            outcome = request.parse(payload)
        except InferenceProtocolError as error:
            outcome = _Attempt(error, self.retry.backoff(attempt_number, self._rng))
        else:
            reported = request.counted(outcome) if request.counted is not None else None
            if reported is not None:
                self.limiter.settle(slot, request.tokens, reported)
        # After the settlement: the ledger then holds this request's count, not its estimate.
        used = tokens_used_in_window(response.headers)
        if used is not None:
            self.limiter.reconcile(used)
        return outcome

    def _failed_status(
        self, response: httpx.Response, body: dict[str, Any], attempt_number: int, tally: CallTally
    ) -> _Attempt:
        """Map a non-200 response to an error and the wait before a retry (if it is retryable)."""
        status = response.status_code
        if status == 429:
            tally.rate_limited += 1
            delay = self.retry.rate_limit_delay(
                rate_limit_hint(response.headers), self.limiter.slot_interval, attempt_number, self._rng
            )
            # The quota is the model's, not this request's: every worker waits, and callers whose
            # time budget the wait exceeds give up at once (RequestRateLimiter.acquire).
            self.limiter.push_back(delay)
            return _Attempt(
                self.errors.rate_limited(
                    f"{self.base_url} rate-limited model {self.model} (HTTP 429)", status_code=status
                ),
                delay,
            )
        detail = server_message(response, self._redactor)
        if status >= 500:
            return _Attempt(
                self.errors.server_error(f"{self.base_url} failed with HTTP {status}: {detail}", status_code=status),
                self.retry.backoff(attempt_number, self._rng),
            )
        return _Attempt(self._rejected(response, detail, body), 0.0)

    def _rejected(self, response: httpx.Response, detail: str, body: dict[str, Any]) -> InferenceError:
        """The error for a status that no retry would change."""
        status = response.status_code
        contract = self.contract
        if status == 401:
            return self.errors.unauthorized(
                f"{contract.key_setting} was rejected by {self.base_url}: set {contract.key_setting} to the key of "
                f"the model attached to your app (heroku config:get {contract.key_setting})",
                status_code=status,
            )
        if status == 403:
            return self.errors.forbidden(
                f"{contract.key_setting} has no access to model {self.model}; attach the model with "
                f"`heroku ai:models:attach` / check {contract.model_setting}",
                status_code=status,
            )
        if status == 404:
            return self.errors.model_not_found(
                f"unknown model {self.model}; valid: {', '.join(contract.known_models)}; check "
                f"{contract.model_setting} (or {contract.url_setting}={self.base_url} does not serve "
                f"{contract.path}); server said: {detail}",
                status_code=status,
            )
        if 400 <= status < 500:
            classified = self._rejection(status, detail, body) if self._rejection is not None else None
            return classified or self.errors.bad_request(
                f"{self.base_url} rejected the {contract.name} request (HTTP {status}): {detail}", status_code=status
            )
        return self.errors.protocol_error(
            f"unexpected HTTP {status} from {self.base_url}{contract.path}"
            f" (Location: {response.headers.get('location', '-')}); check {contract.url_setting}",
            status_code=status,
        )

    def _unreachable(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            reason = "no connection within the connect timeout (ConnectTimeout)"
        elif isinstance(exc, httpx.TimeoutException):
            reason = f"no response within the read timeout ({type(exc).__name__})"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return f"could not reach {self.contract.url_setting}={self.base_url}: {reason}"

    def _gave_up(self, error: InferenceError, attempts: int, elapsed: float) -> InferenceError:
        return type(error)(
            f"{error} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s)",
            status_code=error.status_code,
            code=error.code,
        )
