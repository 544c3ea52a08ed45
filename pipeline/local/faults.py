"""Fault injection for the local stand-ins: what goes wrong with a request, and acting it out.

A request's fault comes, in order, from its ``X-Fault`` header (only in ``test_mode``),
from faults queued with :meth:`FaultPlan.add`, or from a seeded random draw at the
configured rates.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response

from pipeline.local.config import StandInConfig
from pipeline.local.responses import Rejection, rate_limited

FAULT_HEADER = "X-Fault"
# What a "garbled" fault sends: a body its Content-Encoding header does not describe.
GARBLED_BODY = b"this is not gzip"
FAULT_KINDS = ("400", "429", "500", "timeout", "malformed", "garbled")
_HANG_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Fault:
    """``kind`` is one of :data:`FAULT_KINDS` or latency.

    400 plays a server refusing this request's content (a per-request failure, unlike a bad
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
    text: str | None


class FaultPlan:
    """Faults queued from Python: each hits the next ``times`` matching requests (None: all).

    A fault queued with a ``text`` hits only requests that carry it: the rerank query, or one
    of the inputs to embed.
    """

    def __init__(self) -> None:
        self._queue: list[_QueuedFault] = []
        self._lock = threading.Lock()

    def add(self, fault: str, *, times: int | None = 1, text: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` requests (only those carrying ``text`` if given)."""
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, got {times}")
        with self._lock:
            self._queue.append(_QueuedFault(Fault.parse(fault), times, text))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self, texts: Collection[str]) -> Fault | None:
        with self._lock:
            for queued in self._queue:
                if queued.text is None or queued.text in texts:
                    if queued.remaining is not None:
                        queued.remaining -= 1
                        if queued.remaining == 0:
                            self._queue.remove(queued)
                    return queued.fault
        return None


class FaultInjector:
    """Chooses each request's fault and acts it out; :meth:`release` frees requests held by a timeout.

    ``malformed_body`` is what a "malformed" fault sends: a 200 whose JSON body is cut off
    where the endpoint's answer would go on.
    """

    def __init__(self, seed: int, malformed_body: bytes) -> None:
        self.plan = FaultPlan()
        self.malformed_body = malformed_body
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()

    def release(self) -> None:
        self._stopping.set()

    def choose(self, config: StandInConfig, header: str | None, texts: Collection[str]) -> Fault | None:
        """The fault for a request with this ``X-Fault`` header value carrying these texts, if any."""
        if header and config.test_mode:
            try:
                return Fault.parse(header)
            except ValueError as error:
                raise Rejection(400, "bad_request", f"{FAULT_HEADER}: {error}") from None
        queued = self.plan.take(texts)
        if queued is not None:
            return queued
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

    async def act_out(self, fault: Fault, config: StandInConfig) -> Response | None:
        """Act out ``fault``; return the response to send, or None to answer normally."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_seconds)
            return None
        if fault.kind == "500":
            return JSONResponse(
                {"error": "internal_error", "message": "injected fault: internal error"}, status_code=500
            )
        if fault.kind == "400":
            raise Rejection(400, "bad_request", "injected fault: the service cannot process this request")
        if fault.kind == "429":
            raise rate_limited(
                "injected fault: rate limit exceeded",
                config.fault_retry_after_seconds,
                omit_retry_after=config.omit_retry_after,
            )
        if fault.kind == "malformed":
            return Response(self.malformed_body, status_code=200, media_type="application/json")
        if fault.kind == "garbled":
            return Response(
                GARBLED_BODY, status_code=200, media_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        deadline = time.monotonic() + config.hang_seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(_HANG_POLL_SECONDS)
        return JSONResponse({"error": "timeout", "message": "injected fault: upstream timeout"}, status_code=504)
