"""The embeddings stand-in's rate limits (requests and tokens per minute), its faults and its --fast vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.local import EmbeddingServiceConfig, HashedVectors
from pipeline.local.embedding_service import count_tokens
from tests.embedding_service.conftest import body, vectors_of

# 10 tokens each (cl100k), checked below so the arithmetic of the tests is visible.
TEN_TOKENS = "one two three four five six seven eight nine ten"


def test_the_test_text_has_ten_tokens():
    assert count_tokens([TEN_TOKENS]) == 10


def test_requests_per_minute_is_a_sliding_limit_with_headers(start_service, post):
    service = start_service(requests_per_minute=2)
    admitted = [post(body(), service=service) for _ in range(2)]
    limited = post(body(), service=service)

    assert [response.status_code for response in admitted] == [200, 200] and limited.status_code == 429
    assert [response.headers["x-ratelimit-remaining-requests"] for response in admitted] == ["1", "0"]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "2"
    assert admitted[0].headers["x-ratelimit-reset-requests"] == "60s"
    assert "x-ratelimit-limit-tokens" not in admitted[0].headers  # tokens unlimited here
    assert "2 requests per minute" in limited.json()["message"]
    assert 58 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert [logged.status for logged in service.requests] == [200, 200, 429]


def test_tokens_per_minute_counts_the_services_tokens(start_service, post):
    service = start_service(tokens_per_minute=25)
    first = post(body(input=[TEN_TOKENS, TEN_TOKENS]), service=service)  # 20 of 25
    too_many = post(body(input=[TEN_TOKENS]), service=service)  # 30 > 25
    fits = post(body(input=["one two three four five"]), service=service)  # 25

    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "25"
    assert first.headers["x-ratelimit-remaining-tokens"] == "5"
    assert too_many.status_code == 429 and "25 tokens per minute" in too_many.json()["message"]
    assert 58 <= int(too_many.headers["Retry-After"]) <= 60
    assert too_many.headers["x-ratelimit-remaining-tokens"] == "5"
    assert fits.status_code == 200 and fits.headers["x-ratelimit-remaining-tokens"] == "0"
    assert [(logged.status, logged.tokens) for logged in service.requests] == [(200, 20), (429, 10), (200, 5)]


def test_a_request_larger_than_a_minutes_tokens_is_a_400(start_service, post):
    service = start_service(tokens_per_minute=15)
    response = post(body(input=[TEN_TOKENS, TEN_TOKENS]), service=service)

    assert response.status_code == 400
    assert response.json()["message"] == "this request has 20 tokens, more than the limit of 15 tokens per minute"
    assert post(body(input=[TEN_TOKENS]), service=service).status_code == 200  # the 400 spent nothing


def test_both_limits_report_and_either_one_limits(start_service, post):
    service = start_service(requests_per_minute=3, tokens_per_minute=100)
    response = post(body(input=[TEN_TOKENS]), service=service)

    assert {name: value for name, value in response.headers.items() if name.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "60s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "90",
        "x-ratelimit-reset-tokens": "60s",
    }


def test_rejected_requests_spend_nothing(start_service, post):
    service = start_service(requests_per_minute=1)
    assert post(body(input=[]), service=service).status_code == 400
    assert post(body(), headers={"Authorization": "Bearer wrong"}, service=service).status_code == 401

    assert post(body(), service=service).status_code == 200


def test_rate_limit_can_omit_retry_after(start_service, post):
    service = start_service(tokens_per_minute=10, omit_retry_after=True)
    post(body(input=[TEN_TOKENS]), service=service)
    limited = post(body(input=[TEN_TOKENS]), service=service)

    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.headers["x-ratelimit-remaining-tokens"] == "0"


@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("429", 429), ("400", 400), ("malformed", 200)])
def test_fault_header_forces_one_fault(post, embedding_service, fault, status):
    response = post(body(), headers={"X-Fault": fault})

    assert response.status_code == status
    if fault == "429":
        assert response.headers["Retry-After"] == "1"
    if fault == "malformed":
        assert response.content.startswith(b'{"object": "list", "data": [')
        with pytest.raises(ValueError):
            response.json()
    assert embedding_service.requests[0].fault == fault
    assert post(body()).status_code == 200


def test_a_queued_fault_hits_only_requests_carrying_its_text(post, embedding_service):
    embedding_service.faults.add("500", times=None, text="poison")

    assert post(body(input=["fine", "also fine"])).status_code == 200
    assert post(body(input=["fine", "poison"])).status_code == 500
    assert post(body(input=["poison"])).status_code == 500
    assert [logged.fault for logged in embedding_service.requests] == [None, "500", "500"]


def test_hashed_vectors_are_deterministic_unit_vectors():
    texts = ["alpha", "beta", "alpha", ""]
    vectors = HashedVectors().embed(texts)

    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(vectors[0], vectors[2]) and not np.array_equal(vectors[0], vectors[1])
    assert abs(float(vectors[0] @ vectors[1])) < 0.3  # different texts: nearly orthogonal
    assert np.array_equal(HashedVectors().embed(["alpha"])[0], vectors[0])  # a new instance, the same vector
    assert HashedVectors(dimensions=1024).embed(["alpha"]).shape == (1, 1024)


def test_the_fast_stand_in_serves_hashed_vectors_and_says_so(start_service, post):
    service = start_service(vectors=HashedVectors())
    response = post(body(input=["alpha", "beta"], encoding_format="base64"), service=service)

    assert np.array_equal(vectors_of(response), HashedVectors().embed(["alpha", "beta"]))
    assert "hashed text" in response.headers["x-local-stand-in"]
    assert "no meaning" in response.headers["x-local-stand-in"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="api_key is empty"):
        EmbeddingServiceConfig(api_key="")
    with pytest.raises(ValueError, match="EMBEDDING_KEY contains a line feed"):
        EmbeddingServiceConfig(api_key="key\n")
    with pytest.raises(ValueError, match="tokens_per_minute must be at least 1"):
        EmbeddingServiceConfig(api_key="k", tokens_per_minute=0)
    with pytest.raises(ValueError, match="unknown models"):
        EmbeddingServiceConfig(api_key="k", allowed_models=["cohere-rerank-3-5"])
    with pytest.raises(ValueError, match="malformed_rate"):
        EmbeddingServiceConfig(api_key="k", malformed_rate=2)
