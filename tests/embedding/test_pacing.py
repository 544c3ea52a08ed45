"""Pacing under a tokens-per-minute limit the server enforces: estimates calibrated by usage, ledger by headers.

The server counts tokens its own way (``server_tokens``) over a sliding window of the test's
clock and answers 429 past its limit; the embedder sleeps on the same clock, so these runs take
no real time and the throughput they show is the pacing's, measured on the server's side.
"""

from __future__ import annotations

import random

import pytest

from tests.embedding.conftest import server_tokens

# Half the published 800,000: requests are a small share of the window's budget, as they are at Heroku,
# so whole requests fit it closely; the run spans a few windows.
LIMIT = 400_000


def _passages(count: int, seed: int, shortest: int = 100, longest: int = 1500) -> list[str]:
    rng = random.Random(seed)
    words = ["pool", "connection", "max_connections", "SELECT", "vacuum", "index", "replica", "WAL", "=", "(x)"]
    texts = []
    for number in range(count):
        length = rng.randint(shortest, longest)
        text = f"{number}:"
        while len(text) < length:
            text += " " + rng.choice(words)
        texts.append(text[:length])
    return texts


def _throughput_per_minute(received) -> float:
    """Tokens the server accepted per minute between the first and the last arrival (the last one excluded)."""
    first, last = received[0].at, received[-1].at
    tokens = sum(server_tokens(text) for request in received[:-1] for text in request.input)
    return tokens / (last - first) * 60


def test_calibrated_estimates_reach_nine_tenths_of_the_token_limit_without_a_429(make_embedder, contract_server):
    contract_server.tokens_per_minute = LIMIT
    embedder = make_embedder(requests_per_minute=10_000, tokens_per_minute=LIMIT, concurrent_requests=1)
    texts = _passages(96 * 100, seed=3, shortest=100, longest=600)

    embedded = sum(len(positions) for positions, _ in embedder.iter_document_batches(texts))

    assert embedded == len(texts) and contract_server.rate_limited == 0
    throughput = _throughput_per_minute(contract_server.received)
    assert 0.9 * LIMIT <= throughput <= LIMIT, throughput
    # The learnt ratio is the server's: its count per character sent, though the client never saw its tokenizer.
    true_ratio = sum(map(server_tokens, texts)) / sum(map(len, texts))
    assert embedder.calibration.tokens_per_character == pytest.approx(true_ratio, rel=0.05)


def test_tokens_another_process_spent_hold_the_next_sends_back(make_embedder, contract_server):
    """The headers say the window holds more than this client sent: it waits instead of collecting 429s."""
    contract_server.tokens_per_minute = 60_000
    contract_server.spend(40_000)
    embedder = make_embedder(requests_per_minute=10_000, tokens_per_minute=60_000, concurrent_requests=1)
    texts = _passages(96 * 12, seed=4, shortest=250, longest=350)

    embedded = sum(len(positions) for positions, _ in embedder.iter_document_batches(texts))

    assert embedded == len(texts) and contract_server.rate_limited == 0
    assert embedder.stats.rate_limited == 0


def test_a_server_that_reports_no_usage_is_paced_at_the_conservative_prior(make_embedder, contract_server):
    contract_server.tokens_per_minute = LIMIT
    contract_server.report_usage = False
    embedder = make_embedder(requests_per_minute=10_000, tokens_per_minute=LIMIT, concurrent_requests=2)
    texts = _passages(96 * 6, seed=5)

    embedded = sum(len(positions) for positions, _ in embedder.iter_document_batches(texts))

    assert embedded == len(texts) and contract_server.rate_limited == 0
    assert not embedder.calibration.calibrated
    # One token a character is well above the server's count: far under the limit, never over it.
    assert _throughput_per_minute(contract_server.received) < 0.5 * LIMIT
