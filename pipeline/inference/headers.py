"""What a response's rate-limit headers say about when to send again, and how many tokens the window holds.

Heroku sends ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*``
for requests and for tokens (the reset as a duration such as ``51s``, when the oldest entry
leaves the window); other servers send ``Retry-After`` (seconds or an HTTP date), unsuffixed
``x-ratelimit-*`` or ``ratelimit-*``, with the reset as delta seconds or a Unix timestamp.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# x-ratelimit-reset values above this are Unix timestamps rather than delays.
_EPOCH_THRESHOLD = 1_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# (remaining, reset) header names per quota, most specific last.
_REQUEST_QUOTA = (
    ("x-ratelimit-remaining", "x-ratelimit-remaining-requests", "ratelimit-remaining"),
    ("x-ratelimit-reset", "x-ratelimit-reset-requests", "ratelimit-reset"),
)
_TOKEN_QUOTA = (("x-ratelimit-remaining-tokens",), ("x-ratelimit-reset-tokens",))


def exhausted_quota_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds until the spent quotas (remaining 0) reset: the longer of requests' and tokens'.

    None if no quota is spent."""
    delays = [
        delay
        for remaining_names, reset_names in (_REQUEST_QUOTA, _TOKEN_QUOTA)
        if _spent(headers, remaining_names) and (delay := _reset_delay(headers, reset_names))
    ]
    return max(delays) if delays else None


def tokens_used_in_window(headers: Mapping[str, str]) -> int | None:
    """Tokens the server counts in its current window: ``x-ratelimit-limit-tokens`` minus ``-remaining-tokens``.

    None unless both are whole numbers: the configured limit may be an operator's lower share of
    the server's, so the server's own limit is needed to read its remainder.
    """
    limit = _whole_number(headers.get("x-ratelimit-limit-tokens"))
    remaining = _whole_number(headers.get("x-ratelimit-remaining-tokens"))
    if limit is None or remaining is None:
        return None
    return max(0, limit - remaining)


def rate_limit_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429 asks us to wait: Retry-After first, then the spent quota's reset, then any reset."""
    retry_after = _retry_after(headers)
    if retry_after is not None:
        return retry_after
    spent = exhausted_quota_delay(headers)
    if spent is not None:
        return spent
    requests_reset = _reset_delay(headers, _REQUEST_QUOTA[1])
    return requests_reset if requests_reset is not None else _reset_delay(headers, _TOKEN_QUOTA[1])


def _retry_after(headers: Mapping[str, str]) -> float | None:
    retry_after = headers.get("retry-after")
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _spent(headers: Mapping[str, str], names: Sequence[str]) -> bool:
    remaining = _first_header(headers, names)
    if remaining is None:
        return False
    try:
        return float(remaining) <= 0
    except ValueError:
        return False


def _reset_delay(headers: Mapping[str, str], names: Sequence[str]) -> float | None:
    """The first reset header among ``names`` as delta seconds, a Unix timestamp, or a duration like ``1m30s``."""
    value = _first_header(headers, names)
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


def _whole_number(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value else None
    except ValueError:
        return None


def _first_header(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value.strip()
    return None
