"""The stand-ins' rate limits: what each model spent over the last minute, per unit (requests, tokens).

Heroku limits each model over a sliding one-minute window; capacity comes back gradually as
entries leave it. A request is admitted only if it fits every window of its model, and then
counts against all of them; a rejected request counts against none.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass

REQUESTS = "requests"
TOKENS = "tokens"


@dataclass(frozen=True)
class Quota:
    """One window of one model as a request left it: what the ``x-ratelimit-*-{unit}`` headers say."""

    unit: str
    limit: int
    remaining: int
    # Until the oldest entry leaves the window (0 when the window is empty).
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{self.unit}": str(self.limit),
            f"x-ratelimit-remaining-{self.unit}": str(self.remaining),
            f"x-ratelimit-reset-{self.unit}": f"{math.ceil(self.reset_seconds)}s",
        }


class RateLimitExceeded(Exception):
    """The request does not fit a window now; it would in ``wait_seconds``."""

    def __init__(self, model: str, unit: str, limit: int, wait_seconds: float, quotas: tuple[Quota, ...]) -> None:
        super().__init__(f"rate limit of {limit} {unit} per minute exceeded for model {model!r}")
        self.wait_seconds = wait_seconds
        self.quotas = quotas


class LargerThanLimit(Exception):
    """The request alone spends more than a whole minute allows: it would never be admitted."""

    def __init__(self, unit: str, amount: int, limit: int) -> None:
        super().__init__(f"this request has {amount} {unit}, more than the limit of {limit} {unit} per minute")


class _Window:
    """Amounts spent in the last ``span`` seconds, oldest first."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.spent = 0

    def expire(self, now: float, span: float) -> None:
        while self.entries and self.entries[0][0] <= now - span:
            self.spent -= self.entries.popleft()[1]

    def wait_for(self, amount: int, limit: int, now: float, span: float) -> float:
        """Seconds until ``amount`` more fits under ``limit``; 0 if it fits now."""
        excess = self.spent + amount - limit
        wait = 0.0
        for spent_at, spent in self.entries:
            if excess <= 0:
                break
            excess -= spent
            wait = spent_at + span - now
        return wait

    def reset_seconds(self, now: float, span: float) -> float:
        return self.entries[0][0] + span - now if self.entries else 0.0


class RateLimiter:
    """Per-model sliding windows for each limited unit; thread-safe."""

    def __init__(self, limits: Mapping[str, int | None], *, window_seconds: float) -> None:
        # Unlimited units (None) are not tracked at all.
        self.limits = {unit: limit for unit, limit in limits.items() if limit is not None}
        self.window_seconds = window_seconds
        self._windows: defaultdict[tuple[str, str], _Window] = defaultdict(_Window)
        self._lock = threading.Lock()

    def admit(self, model: str, amounts: Mapping[str, int]) -> tuple[Quota, ...]:
        """Spend ``amounts`` (per unit) in every window of ``model``, and return the windows' quotas.

        Raises :class:`LargerThanLimit` or :class:`RateLimitExceeded` (the longest wait of the
        windows it does not fit) without spending anything.
        """
        span = self.window_seconds
        with self._lock:
            now = time.monotonic()
            windows = {unit: self._windows[model, unit] for unit in self.limits}
            waits: dict[str, float] = {}
            for unit, window in windows.items():
                window.expire(now, span)
                amount, limit = amounts.get(unit, 0), self.limits[unit]
                if amount > limit:
                    raise LargerThanLimit(unit, amount, limit)
                waits[unit] = window.wait_for(amount, limit, now, span)
            blocking = max(waits, key=waits.__getitem__, default=None)
            if blocking is None or waits[blocking] <= 0:
                for unit, window in windows.items():
                    window.entries.append((now, amounts.get(unit, 0)))
                    window.spent += amounts.get(unit, 0)
            quotas = tuple(
                Quota(unit, self.limits[unit], self.limits[unit] - window.spent, window.reset_seconds(now, span))
                for unit, window in windows.items()
            )
        if blocking is not None and waits[blocking] > 0:
            raise RateLimitExceeded(model, blocking, self.limits[blocking], waits[blocking], quotas)
        return quotas

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
