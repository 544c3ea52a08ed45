"""What the local stand-ins share: one POST endpoint behind a bearer check, rate limits, faults, a request log.

A request goes through :meth:`StandInService._handle`: the subclass's ``_respond`` checks it
step by step (raising :class:`Rejection` for a 4xx), filling in what it learned; whatever the
outcome, the request is recorded in :attr:`StandInService.requests` (for tests to assert what a
client sent) and logged in one line. The bearer token itself is never stored or logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.local.config import StandInConfig
from pipeline.local.faults import FAULT_HEADER, FaultInjector, FaultPlan
from pipeline.local.rate_limits import LargerThanLimit, Quota, RateLimiter, RateLimitExceeded
from pipeline.local.responses import Rejection, rate_limited

# On every answer of a stand-in that plays a Heroku model with something else: what it really is.
STAND_IN_HEADER = "X-Local-Stand-In"


@dataclass
class Seen:
    """What the handler learned about a request, filled in as validation proceeds."""

    authorized: bool = False
    model: str | None = None
    fault: str | None = None
    # x-ratelimit-* headers of an admitted request, for whatever answer it gets.
    quota_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Logged:
    """One request as a service saw it; ``authorized`` says whether the token matched (never the token)."""

    received_at: float
    finished_at: float
    status: int
    authorized: bool
    model: str | None
    fault: str | None


SeenT = TypeVar("SeenT", bound=Seen)
LoggedT = TypeVar("LoggedT", bound=Logged)


class StandInService(ABC, Generic[SeenT, LoggedT]):
    """The Starlette app (:attr:`app`) plus its state: request log, fault plan, rate windows.

    ``limits`` are per model and minute, by unit (``requests``, ``tokens``); None is unlimited.
    With ``quota_headers`` every admitted or rate-limited answer reports the windows in
    ``x-ratelimit-*`` headers; ``identity_headers`` go on every answer.
    """

    def __init__(
        self,
        config: StandInConfig,
        *,
        name: str,
        path: str,
        malformed_body: bytes,
        limits: Mapping[str, int | None],
        window_seconds: float,
        quota_headers: bool = False,
        identity_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        # The endpoint module's logger, so that each stand-in's lines can be told apart.
        self._logger = logging.getLogger(type(self).__module__)
        self._injector = FaultInjector(config.seed, malformed_body)
        self._limiter = RateLimiter(limits, window_seconds=window_seconds)
        self._sends_quota_headers = quota_headers
        self._identity_headers = dict(identity_headers or {})
        self._log: deque[LoggedT] = deque(maxlen=config.request_log_limit)
        self._log_lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(path, self._handle, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    @property
    def faults(self) -> FaultPlan:
        """Faults queued from Python for the coming requests."""
        return self._injector.plan

    @property
    def requests(self) -> list[LoggedT]:
        """A snapshot of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear(self) -> None:
        """Forget logged requests, queued faults and rate windows."""
        with self._log_lock:
            self._log.clear()
        self._limiter.clear()
        self.faults.clear()

    def close(self) -> None:
        """Release requests held by a timeout fault."""
        self._injector.release()

    @abstractmethod
    def warm(self) -> None:
        """Load what the first request would otherwise wait for."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What the service is, for the line that announces it."""

    @abstractmethod
    def _new_seen(self) -> SeenT: ...

    @abstractmethod
    async def _respond(self, request: Request, seen: SeenT) -> Response:
        """The answer to an authorized, well-formed request; raises :class:`Rejection` otherwise."""

    @abstractmethod
    def _logged(self, seen: SeenT, outcome: Logged) -> LoggedT:
        """The log entry: ``outcome`` and what this endpoint records of the request."""

    @abstractmethod
    def _details(self, logged: LoggedT) -> str:
        """What this endpoint's log line says of a request beyond its status and model: counts, never texts."""

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _handle(self, request: Request) -> Response:
        received_at = time.time()
        seen = self._new_seen()
        try:
            response = await self._respond(request, seen)
        except Rejection as rejection:
            response = rejection.response()
        response.headers.update({**seen.quota_headers, **self._identity_headers})
        outcome = Logged(received_at, time.time(), response.status_code, seen.authorized, seen.model, seen.fault)
        logged = self._logged(seen, outcome)
        with self._log_lock:
            self._log.append(logged)
        # Neither the token nor the texts: a line per request says what happened, not what was sent.
        self._logger.info(
            "%s %d model=%s %s authorized=%s fault=%s %.0fms",
            self.name,
            logged.status,
            logged.model,
            self._details(logged),
            logged.authorized,
            logged.fault or "-",
            (logged.finished_at - logged.received_at) * 1000,
        )
        return response

    async def _model_of(self, request: Request, seen: SeenT) -> tuple[str, dict[str, Any]]:
        """Check the token, read the JSON body and its ``model`` (known, attached to this key)."""
        self._check_token(request.headers.get("authorization"))
        seen.authorized = True
        body = await _json_body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise Rejection(400, "bad_request", "missing required field: model")
        seen.model = model
        known = self.config.known_models
        if model not in known:
            raise Rejection(404, "not_found", f"model {model!r} not found; available models: {', '.join(known)}")
        if self.config.allowed_models is not None and model not in self.config.allowed_models:
            raise Rejection(403, "forbidden", f"this key has no access to model {model!r}")
        return model, body

    def _admit(self, seen: SeenT, model: str, amounts: Mapping[str, int]) -> None:
        """Spend ``amounts`` in ``model``'s windows, or answer 429 (400 if they could never fit)."""
        try:
            quotas = self._limiter.admit(model, amounts)
        except LargerThanLimit as error:
            raise Rejection(400, "bad_request", str(error)) from None
        except RateLimitExceeded as error:
            raise rate_limited(
                str(error),
                error.wait_seconds,
                omit_retry_after=self.config.omit_retry_after,
                headers=self._headers_of(error.quotas),
            ) from None
        seen.quota_headers = self._headers_of(quotas)

    def _headers_of(self, quotas: tuple[Quota, ...]) -> dict[str, str]:
        if not self._sends_quota_headers:
            return {}
        return {name: value for quota in quotas for name, value in quota.headers().items()}

    async def _faulty_response(self, request: Request, seen: SeenT, texts: Collection[str]) -> Response | None:
        """Add the configured latency and act out this request's fault: the answer it forces, if any."""
        fault = self._injector.choose(self.config, request.headers.get(FAULT_HEADER), texts)
        seen.fault = str(fault) if fault else None
        if self.config.added_latency_seconds:
            await asyncio.sleep(self.config.added_latency_seconds)
        if fault is None:
            return None
        return await self._injector.act_out(fault, self.config)

    def _check_token(self, authorization: str | None) -> None:
        if not authorization:
            raise Rejection(401, "unauthorized", "missing Authorization header; expected 'Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        matches = hmac.compare_digest(token.strip().encode("utf-8"), self.config.api_key.encode("utf-8"))
        if scheme.lower() != "bearer" or not matches:
            raise Rejection(401, "unauthorized", "invalid bearer token")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise Rejection(400, "bad_request", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejection(400, "bad_request", "request body must be a JSON object")
    return body


def string_list(body: dict[str, Any], field: str, *, most: int, items: str) -> list[str]:
    """``body[field]``: a list of 1 to ``most`` strings (``items`` names them in the 400 past it), or a 400."""
    if field not in body:
        raise Rejection(400, "bad_request", f"missing required field: {field}")
    texts = body[field]
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise Rejection(400, "bad_request", f"{field} must be a list of strings")
    if not texts:
        raise Rejection(400, "bad_request", f"{field} must not be empty")
    if len(texts) > most:
        raise Rejection(400, "bad_request", f"too many {items}: {len(texts)} (at most {most} per request)")
    return texts
