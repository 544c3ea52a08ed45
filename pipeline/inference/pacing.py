"""Even pacing under a model's requests-per-minute and tokens-per-minute limits, shared by every thread.

Heroku counts both limits per model over a sliding one-minute window, by when a request
arrives. A client that used a sliding window itself would send a whole minute's budget back
to back, and the first request of the next burst that lands inside the server's window would
collect a 429. So :class:`RequestRateLimiter` spaces sends instead: after each one, the next
waits the longer of one request's share of the minute and the sent request's tokens' share of
it. That never puts more than the paced number of requests in any window, sustains exactly
that rate, and saves up no credit while idle.

Token counts are the endpoint layer's estimate (an embeddings request knows its inputs, a chat
request its prompt and ``max_completion_tokens``). Spacing alone could let the first request
of a window carry it past the limit, so a ledger of the tokens sent in the last window holds a
request until it fits. The ledger is held to the limit itself, not to the paced share: it
already keeps each send for the window plus the arrival jitter, and the paced share of the
spacing leaves it room for one request's variation. Held to the paced share as well, the two
margins met and the ledger stalled even pacing every window (0.89 of the limit reached).
The ledger follows what the server counted: :meth:`settle`
replaces a request's estimate by the count its answer reports, and :meth:`reconcile` adds what
the server's rate-limit headers say was used beyond the ledger (another process on the same
model, or a count the estimates miss).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# The limiter paces at this share of the published limit. It stamps when a request leaves, the
# server when it arrives: 2% of a minute (1.2 s) absorbs that jitter, so no request lands inside
# the window of the one sent a full limit earlier.
DEFAULT_PACING_SHARE = 0.98
RATE_WINDOW_SECONDS = 60.0
# The server's window slides by when a request arrives, the ledger's by when it left: an old send
# whose trip was slower than the new one's would still be in the server's window when the ledger
# let it go. So a ledger entry holds its tokens this much past the window (the same 1.2 s of jitter
# the pacing share absorbs), and :meth:`RequestRateLimiter.reconcile` does not take that lag for
# tokens someone else used.
ARRIVAL_GRACE_SECONDS = 1.2


class RateLimitWaitExceeded(Exception):
    """:meth:`RequestRateLimiter.acquire` would have to wait past the caller's deadline."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"the next free request slot is {wait_seconds:.1f}s away")
        self.wait_seconds = wait_seconds


class RequestRateLimiter:
    """Paces sends evenly: one every ``window_seconds / (requests_per_minute × pacing_share)`` seconds at most.

    With ``tokens_per_minute``, a send of ``tokens`` also keeps the next one
    ``tokens × window_seconds / (tokens_per_minute × pacing_share)`` seconds away, and no send
    goes out while the tokens sent in the last window plus its own would exceed
    ``tokens_per_minute``.

    Thread-safe: each caller reserves the next free slot under the lock and sleeps outside it,
    so waiting workers go in arrival order. :meth:`push_back` (after a 429) moves every caller
    behind the given delay; a caller that already holds an earlier slot takes a new one.
    """

    def __init__(
        self,
        requests_per_minute: int,
        *,
        tokens_per_minute: int | None = None,
        pacing_share: float = DEFAULT_PACING_SHARE,
        window_seconds: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        if tokens_per_minute is not None and tokens_per_minute < 1:
            raise ValueError(f"tokens_per_minute must be at least 1 or None, got {tokens_per_minute}")
        if not 0 < pacing_share <= 1:
            raise ValueError(f"pacing_share must be within (0, 1], got {pacing_share}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.window_seconds = window_seconds
        self.slot_interval = window_seconds / (requests_per_minute * pacing_share)
        # Tokens one window may carry, and how long one token keeps the next send away.
        self.token_budget = tokens_per_minute * pacing_share if tokens_per_minute else None
        self.seconds_per_token = window_seconds / self.token_budget if self.token_budget else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next_slot = float("-inf")
        self._blocked_until = float("-inf")
        # (slot, tokens) of the sends that carried tokens, oldest first; slots only grow.
        self._sent_tokens: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def acquire(self, deadline: float | None = None, *, tokens: int = 0) -> float:
        """Block until this caller's slot for a request of ``tokens`` tokens; return its clock time.

        Raises :class:`RateLimitWaitExceeded`, reserving nothing, when the slot would come after
        ``deadline`` (a clock time): one long Retry-After then fails the callers whose budgets it
        exceeds at once instead of holding them for its whole length. Raises ValueError for a
        request larger than a whole window's token budget, which no wait would let through.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be non-negative, got {tokens}")
        if self.token_budget is not None and tokens > self.token_budget:
            raise ValueError(
                f"a request estimated at {tokens} tokens exceeds the {self.token_budget:.0f} tokens paced per "
                f"{self.window_seconds:g}s (tokens_per_minute={self.tokens_per_minute}): send smaller requests"
            )
        counted = tokens if self.token_budget is not None else 0
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_slot, self._blocked_until)
                if counted:
                    slot = self._token_room(slot, counted)
                if deadline is not None and slot > deadline:
                    raise RateLimitWaitExceeded(slot - now)
                self._next_slot = slot + max(self.slot_interval, counted * self.seconds_per_token)
                if counted:
                    self._sent_tokens.append((slot, counted))
            if slot > now:
                self._sleep(slot - now)
            with self._lock:
                if self._blocked_until <= slot:
                    return slot
                if (slot, counted) in self._sent_tokens:
                    # Not sent at that slot: its tokens must not hold back the others.
                    self._sent_tokens.remove((slot, counted))

    def settle(self, slot: float, estimated: int, counted: int) -> None:
        """Replace the estimate of the request sent at ``slot`` by the ``counted`` tokens its answer reported.

        Also respaces the next send when no other caller has reserved one since: the first
        request of a run, estimated before anything was counted, then does not hold the next
        back for its estimate's share of the minute.
        """
        if self.token_budget is None or counted < 0:
            return
        with self._lock:
            if (slot, estimated) in self._sent_tokens:
                entries = self._sent_tokens
                entries[entries.index((slot, estimated))] = (slot, counted)
            if self._next_slot == slot + max(self.slot_interval, estimated * self.seconds_per_token):
                self._next_slot = slot + max(self.slot_interval, counted * self.seconds_per_token)

    def reconcile(self, used_in_window: int) -> None:
        """Take in the server's count of the tokens used in its current window (its rate-limit headers).

        What the server counts beyond the ledger's sends of the last window is entered as spent
        now, so it holds the next sends back until it leaves the window. A server that counts
        less than the ledger changes nothing: requests still in flight are in the ledger but
        not yet in the server's count.
        """
        if self.token_budget is None:
            return
        with self._lock:
            now = self._clock()
            since = now - self.window_seconds - ARRIVAL_GRACE_SECONDS
            ledger = sum(count for slot, count in self._sent_tokens if since < slot <= now)
            excess = used_in_window - ledger
            if excess <= 0:
                return
            # Kept in slot order: reservations made for later slots stay after it.
            position = len(self._sent_tokens)
            while position and self._sent_tokens[position - 1][0] > now:
                position -= 1
            self._sent_tokens.insert(position, (now, excess))

    def push_back(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _token_room(self, slot: float, tokens: int) -> float:
        """The earliest time from ``slot`` at which ``tokens`` more fit the last window's limit (lock held).

        Reads the ledger without consuming it beyond what has left every future window: a caller
        refused for its deadline reserves nothing, and the next may need those entries.
        """
        limit = self.tokens_per_minute
        assert limit is not None
        sent = self._sent_tokens
        held = self.window_seconds + ARRIVAL_GRACE_SECONDS
        while sent and sent[0][0] <= slot - held:
            sent.popleft()
        in_window = sum(count for _, count in sent)
        for oldest, count in sent:
            if in_window + tokens <= limit:
                break
            slot = max(slot, oldest + held)
            in_window -= count
        return slot
