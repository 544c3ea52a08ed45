"""RequestRateLimiter under a tokens-per-minute limit as well as a requests-per-minute one (fake clock)."""

from __future__ import annotations

import random

import pytest

from pipeline.inference import RateLimitWaitExceeded, RequestRateLimiter
from pipeline.inference.pacing import ARRIVAL_GRACE_SECONDS
from tests.clock import FakeClock


def _tokens_in_any_window(sends: list[tuple[float, int]], window: float) -> int:
    """The most tokens sent inside any half-open window [t, t + window)."""
    return max(sum(tokens for other, tokens in sends if start <= other < start + window) for start, _ in sends)


def test_sends_are_spaced_by_their_tokens_share_of_the_minute(fake_clock):
    limiter = RequestRateLimiter(
        1000, tokens_per_minute=60_000, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep
    )

    assert [limiter.acquire(tokens=2000) for _ in range(4)] == [1000.0, 1002.0, 1004.0, 1006.0]
    # The spacing follows the request just sent: a small one after a big one waits its share.
    assert limiter.acquire(tokens=60) == 1008.0
    # Small requests are held to the requests-per-minute spacing (60 ms), not their tokens' (1 ms).
    assert limiter.acquire(tokens=1) == pytest.approx(1008.06)
    assert limiter.acquire(tokens=1) == pytest.approx(1008.12)


def test_no_window_carries_more_tokens_than_the_limit(fake_clock):
    limiter = RequestRateLimiter(500, tokens_per_minute=800_000, clock=fake_clock, sleep=fake_clock.sleep)
    rng = random.Random(7)
    # Mostly small requests with a few near the largest an embeddings request can be (96 × 512 tokens).
    sizes = [rng.choice([300, 800, 2_000, 49_152]) for _ in range(600)]
    sends = [(limiter.acquire(tokens=size), size) for size in sizes]

    # Even when each send arrives up to the grace later than the one before it.
    assert _tokens_in_any_window(sends, 60.0 + ARRIVAL_GRACE_SECONDS) <= 800_000
    slots = [slot for slot, _ in sends]
    assert slots == sorted(slots) and len(set(slots)) == len(slots)


def test_steady_requests_are_paced_near_the_limit(fake_clock):
    """As the embeddings client sends the PostgreSQL manual: batches counting 11,000 to 18,000 tokens,
    each estimated 3% over and settled by the server's count when its answer comes back."""
    limiter = RequestRateLimiter(500, tokens_per_minute=800_000, clock=fake_clock, sleep=fake_clock.sleep)
    rng = random.Random(3)
    sends = []
    for _ in range(600):
        counted = rng.randint(11_000, 18_000)
        estimate = round(counted * 1.03)
        slot = limiter.acquire(tokens=estimate)
        fake_clock.sleep(0.2)  # the answer's trip
        limiter.settle(slot, estimate, counted)
        sends.append((slot, counted))

    minutes = (sends[-1][0] - sends[0][0]) / 60
    rate = sum(counted for _, counted in sends[:-1]) / minutes
    assert _tokens_in_any_window(sends, 60.0 + ARRIVAL_GRACE_SECONDS) <= 800_000
    assert rate >= 0.95 * 800_000


def test_a_large_request_waits_until_the_window_has_room(fake_clock):
    limiter = RequestRateLimiter(
        10_000, tokens_per_minute=1_000, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep
    )
    first = limiter.acquire(tokens=100)
    second = limiter.acquire(tokens=100)
    # Spacing alone would send 900 tokens at 1012 with 200 still in the window; it waits for the first to leave
    # the server's window, which may have stamped it up to a network jitter later than it left.
    assert (first, second) == (1000.0, 1006.0)
    assert limiter.acquire(tokens=900) == pytest.approx(1060.0 + ARRIVAL_GRACE_SECONDS)


def test_a_request_larger_than_the_budget_is_refused_naming_the_limit(fake_clock):
    limiter = RequestRateLimiter(100, tokens_per_minute=10_000, clock=fake_clock, sleep=fake_clock.sleep)

    with pytest.raises(ValueError, match="tokens_per_minute=10000") as refused:
        limiter.acquire(tokens=9_900)
    assert "send smaller requests" in str(refused.value) and fake_clock.sleeps == []


def test_tokens_count_for_nothing_without_a_tokens_limit(fake_clock):
    limiter = RequestRateLimiter(60, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep)

    assert [limiter.acquire(tokens=1_000_000) for _ in range(3)] == [1000.0, 1001.0, 1002.0]


def test_a_refused_deadline_leaves_the_token_ledger_as_it_was(fake_clock):
    limiter = RequestRateLimiter(
        10_000, tokens_per_minute=1_000, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep
    )
    limiter.acquire(tokens=600)
    with pytest.raises(RateLimitWaitExceeded) as held:
        limiter.acquire(deadline=fake_clock() + 30, tokens=600)

    assert held.value.wait_seconds == pytest.approx(60.0 + ARRIVAL_GRACE_SECONDS)
    # The 600 tokens sent at 1000 still count: another 600 may not go before they leave the window.
    assert limiter.acquire(tokens=600) == pytest.approx(1060.0 + ARRIVAL_GRACE_SECONDS)


def test_a_slot_given_up_after_a_push_back_frees_its_tokens():
    clock = FakeClock()

    def sleep_while_a_429_arrives(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            limiter.push_back(10)

    limiter = RequestRateLimiter(
        10_000, tokens_per_minute=1_000, pacing_share=1.0, clock=clock, sleep=sleep_while_a_429_arrives
    )
    assert limiter.acquire(tokens=400) == 1000.0
    # Reserved at 1024 (400 tokens' share of the minute after the first), held by a 429 while asleep, it takes
    # the next slot, 1048. Had the given-up reservation kept its 400 tokens, 1,200 would be in the window there
    # and it would wait until 1060.
    assert limiter.acquire(tokens=400) == 1048.0


def test_a_settled_count_replaces_the_estimate_and_respaces_the_next_send(fake_clock):
    limiter = RequestRateLimiter(
        10_000, tokens_per_minute=1_000, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep
    )
    slot = limiter.acquire(tokens=900)
    limiter.settle(slot, 900, 100)

    # Estimated at 900 tokens the next send would wait 54 s and 900 more could not go before 1061.2;
    # counted at 100, it waits 100 tokens' share of the minute.
    assert limiter.acquire(tokens=800) == pytest.approx(1006.0)
    # A reservation was made since: settling the first request again respaces nothing before it.
    limiter.settle(slot, 100, 0)
    assert limiter.acquire(tokens=100) == pytest.approx(1006.0 + 48.0)


def test_what_the_server_counted_beyond_the_ledger_holds_the_next_sends_back(fake_clock):
    limiter = RequestRateLimiter(
        10_000, tokens_per_minute=1_000, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep
    )
    slot = limiter.acquire(tokens=100)
    limiter.settle(slot, 100, 100)
    # The server counts 700 in its window: 600 more than this client sent.
    limiter.reconcile(700)
    # 400 more would take the window to 1,100: they wait until the 700 leave it.
    assert limiter.acquire(tokens=400) == pytest.approx(1060.0 + ARRIVAL_GRACE_SECONDS)
    # A server counting less than the ledger (requests still in flight) changes nothing.
    limiter.reconcile(0)
    assert limiter.acquire(tokens=10) == pytest.approx(1060.0 + ARRIVAL_GRACE_SECONDS + 24.0)
