"""When a failed request is tried again, and how long the client waits first.

Transient failures (429, 5xx, timeouts, refused connections, a body damaged on the way) are
retried within ``max_attempts`` attempts and ``max_total_seconds`` per request, rate-limit
waits included; past either the request fails with its last error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_TOTAL_SECONDS = 120.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
# Retry-After counts whole seconds, so "0" is a wait rounded down, not an invitation to hammer.
RETRY_AFTER_FLOOR_SECONDS = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and time allowed per request, and the waits between attempts."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_total_seconds: float = DEFAULT_MAX_TOTAL_SECONDS

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.max_total_seconds <= 0:
            raise ValueError(f"max_total_seconds must be positive, got {self.max_total_seconds}")

    def gives_up(self, attempts: int, elapsed: float, delay: float) -> bool:
        """True when no attempt is left, or waiting ``delay`` more would pass the time budget."""
        return attempts >= self.max_attempts or elapsed + delay > self.max_total_seconds

    @staticmethod
    def backoff(attempt_number: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt_number - 1))
        return rng.uniform(0, ceiling)

    @staticmethod
    def rate_limit_delay(hinted: float | None, slot_interval: float, attempt_number: int, rng: random.Random) -> float:
        """The wait after a 429: the server's hint, else at least the pacing interval, doubling per attempt."""
        if hinted is not None:
            # No jitter: the limiter spreads the workers that all resume at the same instant.
            return max(RETRY_AFTER_FLOOR_SECONDS, hinted)
        # No hint (Heroku may omit one).
        floor = min(BACKOFF_CAP_SECONDS, slot_interval * 2**attempt_number)
        return floor + rng.uniform(0, floor)
