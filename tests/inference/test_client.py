"""The inference core over loopback HTTP: endpoint-neutral messages, token pacing, token rate-limit headers, errors."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.inference import (
    CallTally,
    EndpointContract,
    InferenceClient,
    InferenceConfigurationError,
    InferenceError,
    InferenceModelNotFound,
    InferenceUnauthorized,
    RetryPolicy,
)
from pipeline.inference.pacing import ARRIVAL_GRACE_SECONDS
from pipeline.rerank import RerankClient, RerankUnauthorized, cache_key
from tests.inference.conftest import Reply

# An endpoint the core knows nothing about beyond this description, as the embeddings client will be.
EMBEDDINGS = EndpointContract(
    name="embeddings",
    path="/v1/embeddings",
    url_setting="EMBEDDING_URL",
    key_setting="EMBEDDING_KEY",
    model_setting="EMBEDDING_MODEL_ID",
    known_models=("cohere-embed-multilingual",),
)
KEY = "inf-core-test-3b9d7a1c"
EMBEDDED = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}]}
RANKED = {
    "results": [{"index": 0, "relevance_score": 0.9}],
    "meta": {"api_version": {"version": "2", "is_experimental": False}, "billed_units": {"search_units": 1}},
}


def _embeddings_client(server, fake_clock, **options: Any) -> InferenceClient:
    return InferenceClient(
        EMBEDDINGS,
        server.url,
        KEY,
        "cohere-embed-multilingual",
        requests_per_minute=options.pop("requests_per_minute", 60_000),
        timeout=5.0,
        sleep=fake_clock.sleep,
        clock=fake_clock,
        **options,
    )


def _vectors(payload: Any) -> list[list[float]]:
    return [item["embedding"] for item in payload["data"]]


def test_posts_the_body_to_the_endpoints_path_and_returns_what_parse_makes_of_the_answer(scripted_server, fake_clock):
    scripted_server.reply(Reply(body=EMBEDDED))
    tally = CallTally()
    client = _embeddings_client(scripted_server, fake_clock)

    assert client.post({"input": ["a"]}, _vectors, tally=tally) == [[0.6, 0.8]]
    assert scripted_server.received == [("/v1/embeddings", {"input": ["a"]})]
    assert (tally.requests, tally.retries, tally.rate_limited) == (1, 0, 0)
    client.close()


@pytest.mark.parametrize(
    ("status", "error_type", "phrases"),
    [
        (401, InferenceUnauthorized, ["EMBEDDING_KEY was rejected by", "heroku config:get EMBEDDING_KEY"]),
        (
            404,
            InferenceModelNotFound,
            ["valid: cohere-embed-multilingual", "check EMBEDDING_MODEL_ID", "does not serve /v1/embeddings"],
        ),
    ],
    ids=["401", "404"],
)
def test_configuration_errors_name_the_endpoints_own_config_vars(
    scripted_server, fake_clock, status, error_type, phrases
):
    scripted_server.reply(Reply(status=status, body={"message": "no"}))
    client = _embeddings_client(scripted_server, fake_clock)

    with pytest.raises(error_type) as caught:
        client.post({"input": ["a"]}, _vectors, tally=CallTally())
    assert isinstance(caught.value, InferenceConfigurationError) and caught.value.code == f"http_{status}"
    for phrase in phrases:
        assert phrase in str(caught.value)
    assert "RERANK" not in str(caught.value) and len(scripted_server.received) == 1
    client.close()


def test_token_estimates_pace_requests_under_the_tokens_per_minute_limit(scripted_server, fake_clock):
    scripted_server.reply(Reply(body=EMBEDDED))
    client = _embeddings_client(scripted_server, fake_clock, requests_per_minute=500, tokens_per_minute=60_000)

    for _ in range(3):
        client.post({"input": ["a"]}, _vectors, tally=CallTally(), tokens=29_400)
    # 29,400 tokens are half of the 58,800 paced per minute (98% of 60,000): 30 s apart, not 0.12 s. The
    # third would make three halves in the server's window if the first arrived late: it waits until the
    # first is 1.2 s past the minute (ARRIVAL_GRACE_SECONDS).
    assert fake_clock.sleeps == [pytest.approx(30.0), pytest.approx(30.0 + ARRIVAL_GRACE_SECONDS)]
    assert len(scripted_server.received) == 3
    client.close()


def test_a_success_that_spends_the_token_quota_holds_the_next_request_until_it_resets(scripted_server, fake_clock):
    spent = {"x-ratelimit-remaining-requests": "180", "x-ratelimit-reset-requests": "2s"}
    spent |= {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "51s"}
    scripted_server.reply(Reply(body=RANKED, headers=spent))
    client = RerankClient(
        scripted_server.url, KEY, "cohere-rerank-3-5", sleep=fake_clock.sleep, clock=fake_clock, timeout=5.0
    )

    client.rerank("q", ["one document"])
    assert fake_clock.sleeps == []
    client.rerank("q", ["one document"])
    assert fake_clock.sleeps == [51.0]
    client.close()


def test_a_429_for_spent_tokens_waits_for_the_tokens_reset_not_the_requests(scripted_server, fake_clock):
    limited = {"x-ratelimit-remaining-requests": "120", "x-ratelimit-reset-requests": "3s"}
    limited |= {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "12s"}
    scripted_server.reply(Reply(status=429, body={"message": "too many tokens"}, headers=limited), Reply(body=RANKED))
    client = RerankClient(
        scripted_server.url, KEY, "cohere-rerank-3-5", sleep=fake_clock.sleep, clock=fake_clock, timeout=5.0
    )

    response = client.rerank("q", ["one document"])
    assert (response.requests, response.rate_limited) == (2, 1)
    assert fake_clock.sleeps == [12.0]
    client.close()


def test_rerank_errors_are_inference_errors_with_the_same_published_code(scripted_server, fake_clock):
    scripted_server.reply(Reply(status=401, body={"message": "bad key"}))
    client = RerankClient(scripted_server.url, KEY, "cohere-rerank-3-5", sleep=fake_clock.sleep, clock=fake_clock)

    with pytest.raises(InferenceUnauthorized) as caught:
        client.rerank("q", ["one document"])
    assert type(caught.value) is RerankUnauthorized and isinstance(caught.value, InferenceError)
    assert caught.value.code == "http_401" and "RERANK_KEY was rejected" in str(caught.value)
    client.close()


def test_a_retry_policy_rejects_budgets_that_allow_nothing():
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="max_total_seconds must be positive"):
        RetryPolicy(max_total_seconds=0)


def test_rerank_cache_keys_are_the_digests_rows_were_stored_under_before_the_core():
    """Computed with the rerank client of commit 87b399d: rows cached then still hit."""
    documents = ["Set the pool size per dyno.", "Pools reuse connections — «schön»."]
    assert (
        cache_key("https://us.inference.heroku.com", "cohere-rerank-3-5", "How do I size a pool?", documents, 3)
        == "6555c579dece1de4d12795aafae9f06e4dc0106ec54b8affa90a47d37bf1c831"
    )
    assert (
        cache_key("http://127.0.0.1:8765", "amazon-rerank-1-0", "q", [], None)
        == "69d486c9fb55ce6287a848bbdbabd698eeb99c4028aed752c1057f41b0dc2a0c"
    )
