"""RerankClient against the local service over loopback HTTP, one status code at a time."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise

import httpx
import pytest

from pipeline.rerank import (
    InMemoryRerankCache,
    RateLimitWaitExceeded,
    RequestRateLimiter,
    RerankBadRequest,
    RerankClient,
    RerankError,
    RerankForbidden,
    RerankModelNotFound,
    RerankOutcome,
    RerankProtocolError,
    RerankRateLimited,
    RerankRequest,
    RerankResponse,
    RerankServerError,
    RerankSettingRejected,
    RerankStats,
    RerankUnauthorized,
    RerankUnavailable,
    cache_key,
    endpoint_of,
)
from pipeline.tokens import count_tokens, truncate_to_tokens
from tests.support import run_concurrently

QUERY = "How do I optimize database connection pooling?"
DOCUMENTS = [
    "You can monitor application performance using built-in metrics.",
    "Connection pooling reduces overhead by reusing existing database connections.",
    "Bananas are a yellow fruit rich in potassium.",
    "Set the maximum pool size based on your dyno count and concurrent queries.",
]
OK_BODY = {
    "results": [{"index": 0, "relevance_score": 0.9}],
    "meta": {"api_version": {"version": "2", "is_experimental": False}, "billed_units": {"search_units": 1}},
}


def test_success_maps_results_meta_and_billing(make_client, rerank_service):
    response = make_client().rerank(QUERY, DOCUMENTS, top_n=2)

    [logged] = rerank_service.requests
    assert logged.status == 200 and logged.top_n == 2 and logged.documents == tuple(DOCUMENTS)
    assert [(r.index, r.relevance_score) for r in response.results] == list(logged.results)
    assert response.results[0].index == 1
    assert response.results[0].relevance_score >= response.results[1].relevance_score
    assert (response.api_version, response.is_experimental, response.search_units) == ("2", False, 1)
    assert (response.requests, response.retries, response.rate_limited) == (1, 0, 0)


def test_without_top_n_every_document_is_ranked(make_client, rerank_service):
    response = make_client().rerank(QUERY, DOCUMENTS)

    assert rerank_service.requests[0].top_n is None
    assert sorted(result.index for result in response.results) == [0, 1, 2, 3]
    scores = [result.relevance_score for result in response.results]
    assert scores == sorted(scores, reverse=True)


def test_no_documents_makes_no_call(make_client, rerank_service):
    response = make_client().rerank(QUERY, [])

    assert response.results == () and response.search_units == 0 and response.requests == 0
    assert rerank_service.requests == []


def test_bad_request_surfaces_the_server_message_without_retrying(make_client, rerank_service, fake_clock):
    with pytest.raises(RerankBadRequest) as caught:
        make_client().rerank("   ", DOCUMENTS)

    assert caught.value.status_code == 400 and not caught.value.retryable
    assert "query must be a non-empty string" in str(caught.value)
    assert len(rerank_service.requests) == 1 and fake_clock.sleeps == []


def test_a_400_for_too_many_documents_names_the_setting_and_is_not_retried(start_service, make_client, fake_clock):
    service = start_service(max_documents=3)
    with pytest.raises(RerankSettingRejected) as caught:
        make_client(base_url=service.url).rerank(QUERY, DOCUMENTS)

    assert caught.value.setting == "documents_per_request" and caught.value.status_code == 400
    assert "rejected 4 documents in one request" in str(caught.value)
    assert "too many documents: 4 (at most 3 per request)" in str(caught.value)
    assert len(service.requests) == 1 and fake_clock.sleeps == []


def test_a_400_for_one_querys_content_fails_that_query_only(make_client, rerank_service):
    rerank_service.faults.add("400", text="unprocessable")
    outcomes = make_client().rerank_many(_requests(QUERY, "unprocessable"), max_workers=1)

    assert [outcome.ok for outcome in outcomes] == [True, False]
    assert (outcomes[1].error_type, outcomes[1].error) == ("RerankBadRequest", "http_400")
    assert "for this query (HTTP 400): injected fault: the service cannot process this request" in outcomes[1].detail


@pytest.mark.parametrize(
    ("message", "error_type", "phrase"),
    [
        ("invalid request: top_n must not exceed 10", RerankSettingRejected, "rejected top_n=2"),
        ("number of documents must be at most 100", RerankSettingRejected, "rejected 3 documents in one request"),
        ("document 2 is too long: 9000 tokens", RerankBadRequest, "max_document_tokens=4000 tokens: lower it"),
        ("query contains unsupported characters", RerankBadRequest, "for this query (HTTP 400)"),
    ],
    ids=["top_n", "document-count", "document-length", "content"],
)
def test_a_400_is_classified_by_what_it_rejects(mock_client, message, error_type, phrase):
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(400, json={"message": message})

    client = mock_client(handler)
    with pytest.raises(RerankError) as caught:
        client.rerank(QUERY, ["one", "two", "three"], top_n=2)

    assert type(caught.value) is error_type and phrase in str(caught.value) and message in str(caught.value)
    assert len(sent) == 1


def test_top_n_above_the_document_count_is_sent_as_the_count(mock_client):
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=OK_BODY)

    client = mock_client(handler)
    client.rerank(QUERY, ["one document"], top_n=10)
    assert sent[0]["top_n"] == 1


@pytest.mark.parametrize(
    ("client_options", "service_options", "error_type", "status", "phrases"),
    [
        (
            {"api_key": "wrong-key-0000"},
            {},
            RerankUnauthorized,
            401,
            ["RERANK_KEY was rejected by http://127.0.0.1:"],
        ),
        (
            {},
            {"allowed_models": ["amazon-rerank-1-0"]},
            RerankForbidden,
            403,
            ["no access to model cohere-rerank-3-5", "heroku ai:models:attach", "RERANK_MODEL_ID"],
        ),
        (
            {"model": "cohere-rerank-9"},
            {},
            RerankModelNotFound,
            404,
            [
                "unknown model cohere-rerank-9",
                "valid: cohere-rerank-3-5, amazon-rerank-1-0",
                "RERANK_MODEL_ID",
            ],
        ),
    ],
    ids=["401", "403", "404"],
)
def test_configuration_errors_fail_at_once(
    start_service, make_client, fake_clock, client_options, service_options, error_type, status, phrases
):
    service = start_service(**service_options)
    with pytest.raises(error_type) as caught:
        make_client(base_url=service.url, **client_options).rerank(QUERY, DOCUMENTS)

    assert caught.value.status_code == status and not caught.value.retryable
    for phrase in phrases:
        assert phrase in str(caught.value)
    assert len(service.requests) == 1 and fake_clock.sleeps == []


def test_429_is_retried_after_the_retry_after_delay(make_client, rerank_service, fake_clock):
    rerank_service.faults.add("429")
    client = make_client()
    response = client.rerank(QUERY, DOCUMENTS)

    assert [logged.status for logged in rerank_service.requests] == [429, 200]
    assert (response.requests, response.retries, response.rate_limited) == (2, 1, 1)
    # Retry-After: 1 is honoured exactly, and the limiter, pushed back by the same second, adds nothing.
    assert fake_clock.sleeps == [1.0]


def test_429_without_retry_after_backs_off_at_least_the_slot_interval(start_service, make_client, fake_clock):
    service = start_service(omit_retry_after=True)
    service.faults.add("429", times=2)
    client = make_client(base_url=service.url, requests_per_minute=120)
    client.rerank(QUERY, DOCUMENTS)

    slot = 60 / 120
    first, second = fake_clock.sleeps
    assert slot * 2 <= first <= slot * 4
    assert slot * 4 <= second <= slot * 8


def test_429_on_every_attempt_raises_rate_limited(make_client, rerank_service):
    rerank_service.faults.add("429", times=None)
    with pytest.raises(RerankRateLimited) as caught:
        make_client(max_attempts=3).rerank(QUERY, DOCUMENTS)

    assert caught.value.retryable and caught.value.rate_limited == 3 and caught.value.requests == 3
    assert "gave up after 3 attempts" in str(caught.value)
    assert len(rerank_service.requests) == 3


def test_a_long_retry_after_fails_fast_and_holds_no_other_query(start_service, make_client, fake_clock):
    service = start_service(fault_retry_after_seconds=3600)
    service.faults.add("429")
    outcomes = make_client(base_url=service.url, max_total_seconds=120).rerank_many(
        _requests(QUERY, "database pool size", "bananas"), max_workers=1
    )

    assert [outcome.error_type for outcome in outcomes] == ["RerankRateLimited"] * 3
    assert [outcome.error for outcome in outcomes] == ["rate_limited"] * 3
    assert "gave up after 1 attempt" in outcomes[0].detail
    # The others are not sent into a quota the server said is spent for an hour, nor held for it.
    for outcome in outcomes[1:]:
        assert "held for another 3600s" in outcome.detail and "max_total_seconds" in outcome.detail
        assert outcome.requests == 0
    assert len(service.requests) == 1 and fake_clock.sleeps == []


def test_retry_after_zero_still_waits_a_second(mock_client, fake_clock):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json=OK_BODY)

    client = mock_client(handler, requests_per_minute=60_000)
    client.rerank(QUERY, ["one document"])

    assert len(calls) == 2 and fake_clock.sleeps == [1.0]


@pytest.mark.parametrize("header", ["retry-after-date", "x-ratelimit-reset"])
def test_rate_limit_hints_in_other_formats_are_honoured(mock_client, fake_clock, header):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) > 1:
            return httpx.Response(200, json=OK_BODY)
        if header == "retry-after-date":
            when = datetime.now(UTC) + timedelta(seconds=20)
            return httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        return httpx.Response(429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1m30s"})

    client = mock_client(handler)
    client.rerank(QUERY, ["one document"])

    [wait] = fake_clock.sleeps
    expected = 20 if header == "retry-after-date" else 90
    assert expected - 2 <= wait <= expected


def test_exhausted_quota_on_a_success_holds_the_next_request(mock_client, fake_clock):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=OK_BODY, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "7"})

    client = mock_client(handler)
    client.rerank(QUERY, ["one document"])
    assert fake_clock.sleeps == []
    client.rerank(QUERY, ["one document"])
    assert fake_clock.sleeps == [7.0]


def test_500_then_success(make_client, rerank_service, fake_clock):
    rerank_service.faults.add("500")
    response = make_client().rerank(QUERY, DOCUMENTS)

    assert [logged.status for logged in rerank_service.requests] == [500, 200]
    assert response.retries == 1 and len(response.results) == len(DOCUMENTS)
    [wait] = fake_clock.sleeps
    assert 0 <= wait <= 1.0


def test_persistent_500_raises_server_error_after_max_attempts(make_client, rerank_service, fake_clock):
    rerank_service.faults.add("500", times=None)
    with pytest.raises(RerankServerError) as caught:
        make_client(max_attempts=4).rerank(QUERY, DOCUMENTS)

    assert caught.value.status_code == 500 and "gave up after 4 attempts" in str(caught.value)
    assert "injected fault" in str(caught.value)
    assert len(rerank_service.requests) == 4
    # Full jitter under a doubling ceiling: 1 s, 2 s, 4 s.
    assert len(fake_clock.sleeps) == 3
    for attempt, wait in enumerate(fake_clock.sleeps):
        assert 0 <= wait <= 2**attempt


def test_retries_stop_at_max_total_seconds(make_client, rerank_service, fake_clock):
    rerank_service.faults.add("500", times=None)
    with pytest.raises(RerankServerError):
        make_client(max_attempts=50, max_total_seconds=20).rerank(QUERY, DOCUMENTS)

    assert sum(fake_clock.sleeps) <= 20
    assert len(rerank_service.requests) < 50


def test_timeout_is_retried(start_service, make_client):
    service = start_service(hang_seconds=0.5)
    service.faults.add("timeout")
    response = make_client(base_url=service.url, timeout=0.25).rerank(QUERY, DOCUMENTS)

    assert response.requests == 2 and response.retries == 1
    deadline = time.monotonic() + 3
    while len(service.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted((logged.fault or "", logged.status) for logged in service.requests) == [
        ("", 200),
        ("timeout", 504),
    ]


def test_persistent_timeout_raises_unavailable(start_service, make_client):
    service = start_service(hang_seconds=0.5)
    service.faults.add("timeout", times=None)
    with pytest.raises(RerankUnavailable) as caught:
        make_client(base_url=service.url, timeout=0.2, max_attempts=2).rerank(QUERY, DOCUMENTS)

    assert "no response within the read timeout" in str(caught.value) and caught.value.requests == 2


def test_one_malformed_body_is_retried(make_client, rerank_service):
    rerank_service.faults.add("malformed")
    response = make_client().rerank(QUERY, DOCUMENTS)

    assert [logged.status for logged in rerank_service.requests] == [200, 200]
    assert response.requests == 2 and len(response.results) == len(DOCUMENTS)


def test_cut_off_bodies_are_retried_like_server_errors(make_client, rerank_service):
    rerank_service.faults.add("malformed", times=3)
    response = make_client(max_attempts=6).rerank(QUERY, DOCUMENTS)

    assert [logged.fault for logged in rerank_service.requests] == ["malformed"] * 3 + [None]
    assert response.retries == 3 and len(response.results) == len(DOCUMENTS)


def test_cut_off_bodies_on_every_attempt_raise_protocol_error(make_client, rerank_service):
    rerank_service.faults.add("malformed", times=None)
    with pytest.raises(RerankProtocolError) as caught:
        make_client(max_attempts=4).rerank(QUERY, DOCUMENTS)

    assert "not JSON" in str(caught.value) and "gave up after 4 attempts" in str(caught.value)
    assert len(rerank_service.requests) == 4


def test_a_body_that_does_not_match_its_encoding_is_retried(make_client, rerank_service):
    rerank_service.faults.add("garbled")
    response = make_client().rerank(QUERY, DOCUMENTS)

    assert [logged.fault for logged in rerank_service.requests] == ["garbled", None]
    assert response.retries == 1 and len(response.results) == len(DOCUMENTS)


def test_a_body_that_never_decodes_raises_protocol_error(make_client, rerank_service):
    rerank_service.faults.add("garbled", times=None)
    with pytest.raises(RerankProtocolError, match="could not be decoded") as caught:
        make_client(max_attempts=2).rerank(QUERY, DOCUMENTS)

    assert caught.value.requests == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"results": [{"index": 5, "relevance_score": 0.5}], "meta": OK_BODY["meta"]},
            "outside the 1 documents",
        ),
        ({"results": [{"index": 0}], "meta": OK_BODY["meta"]}, "malformed result"),
        ({"results": [{"index": 0, "relevance_score": 0.5}], "meta": {}}, "search_units"),
        ({"meta": OK_BODY["meta"]}, "no 'results' list"),
        ({"results": [], "meta": OK_BODY["meta"]}, "0 results where 1 were expected"),
        ({"results": [{"index": 0, "relevance_score": float("nan")}], "meta": OK_BODY["meta"]}, "malformed result"),
        ({**OK_BODY, "meta": {"billed_units": 1}}, "search_units"),
        ({**OK_BODY, "meta": {"billed_units": [1]}}, "search_units"),
        ({**OK_BODY, "meta": "v2"}, "search_units"),
        ({**OK_BODY, "meta": {**OK_BODY["meta"], "api_version": ["2"]}}, "malformed meta.api_version"),
        (
            {**OK_BODY, "meta": {**OK_BODY["meta"], "api_version": {"version": {"major": 2}}}},
            "malformed meta.api_version",
        ),
    ],
    ids=[
        "index-out-of-range",
        "missing-score",
        "missing-units",
        "missing-results",
        "missing-document",
        "nan-score",
        "billed-units-number",
        "billed-units-list",
        "meta-string",
        "api-version-list",
        "api-version-object",
    ],
)
def test_contract_violations_in_a_200_are_protocol_errors_not_retried(mock_client, fake_clock, body, reason):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        # json.dumps, unlike httpx's json=, writes NaN as Python's json module reads it back.
        return httpx.Response(200, content=json.dumps(body), headers={"Content-Type": "application/json"})

    client = mock_client(handler)
    with pytest.raises(RerankProtocolError) as caught:
        client.rerank(QUERY, ["one document"])
    assert reason in str(caught.value) and not caught.value.retryable
    # Well-formed JSON of the wrong shape comes back the same way, and each 200 may be billed.
    assert len(calls) == 1 and fake_clock.sleeps == []


@pytest.mark.parametrize(
    ("api_version", "expected"),
    [
        ("2", ("2", False)),
        (2, ("2", False)),
        (None, ("", False)),
        ({"version": "3", "is_experimental": True}, ("3", True)),
    ],
    ids=["string", "number", "missing", "object"],
)
def test_api_version_forms_that_carry_a_version_are_accepted(mock_client, api_version, expected):
    meta = {"billed_units": {"search_units": 1}}
    if api_version is not None:
        meta["api_version"] = api_version
    body = {"results": [{"index": 0, "relevance_score": 0.5}], "meta": meta}
    client = mock_client(lambda request: httpx.Response(200, json=body))
    response = client.rerank(QUERY, ["one document"])
    assert (response.api_version, response.is_experimental) == expected


def test_refused_connection_raises_unavailable(make_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(RerankUnavailable) as caught:
        make_client(base_url=url, max_attempts=3).rerank(QUERY, DOCUMENTS)

    assert str(caught.value).startswith(f"could not reach RERANK_URL={url}: ConnectError")
    assert caught.value.requests == 3 and caught.value.retryable


def test_more_than_1000_documents_are_batched_and_merged(make_client, rerank_service):
    documents = [f"note {position}" for position in range(2050)]
    relevant = {
        1500: "database connection pooling reuses connections",
        2040: "connection pooling for a database",
    }
    for position, text in relevant.items():
        documents[position] = text
    # Embedding 2,050 new texts takes seconds on a busy machine.
    response = make_client(timeout=60.0).rerank("database connection pooling", documents, top_n=5)

    batches = rerank_service.requests
    assert [logged.document_count for logged in batches] == [1000, 1000, 50]
    assert all(logged.top_n is None for logged in batches)
    # Every document's score as the service returned it, by position in the caller's list.
    served = {
        offset + index: score
        for offset, logged in zip((0, 1000, 2000), batches, strict=True)
        for index, score in logged.results
    }
    assert len(served) == 2050
    expected_top = sorted(served, key=lambda position: (-served[position], position))[:5]
    assert [result.index for result in response.results] == expected_top
    assert [result.relevance_score for result in response.results] == [served[p] for p in expected_top]
    assert {result.index for result in response.results[:2]} == set(relevant)
    assert response.search_units == 10 + 10 + 1 and response.requests == 3


def test_long_documents_are_truncated_before_sending(make_client, rerank_service):
    long_document = " ".join(f"word{position}" for position in range(80))
    make_client(max_document_tokens=12).rerank(QUERY, [long_document, "short one"])

    sent_long, sent_short = rerank_service.requests[0].documents
    assert sent_long == truncate_to_tokens(long_document, 12) and count_tokens(sent_long) == 12
    assert sent_short == "short one"


def test_repr_shows_url_and_model_only(make_client, rerank_service, api_key):
    client = make_client()
    assert repr(client) == f"RerankClient(base_url={rerank_service.url!r}, model='cohere-rerank-3-5')"
    assert api_key not in repr(client) and api_key not in repr(client.__dict__)


def test_the_key_never_appears_in_errors_logs_or_the_service_log(
    start_service, make_client, rerank_service, api_key, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong_key = "inf-wrong-5e5e5e5e5e5e"
    forbidden = start_service(allowed_models=["amazon-rerank-1-0"])
    rerank_service.faults.add("500", times=None, text="fails")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    attempts = [
        (make_client(api_key=wrong_key), QUERY),
        (make_client(base_url=forbidden.url), QUERY),
        (make_client(model="no-such-model"), QUERY),
        (make_client(), ""),
        (make_client(max_attempts=2), "fails"),
        (make_client(base_url=closed_url, max_attempts=2), QUERY),
    ]
    texts = []
    for client, query in attempts:
        with pytest.raises(RerankError) as caught:
            client.rerank(query, DOCUMENTS)
        texts += [str(caught.value), repr(caught.value), repr(client)]

    texts.append(caplog.text)
    texts += [repr(logged) for logged in rerank_service.requests + forbidden.requests]
    assert any("retry 1 of 1" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert api_key not in text and wrong_key not in text


def test_a_key_echoed_by_the_server_is_redacted(mock_client):
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": f"bad header {request.headers['authorization']}"})

    client = mock_client(echo, api_key="secret-key-123")
    with pytest.raises(RerankBadRequest) as caught:
        client.rerank(QUERY, ["one document"])
    assert "bad header Bearer [REDACTED]" in str(caught.value)


def test_invalid_arguments_are_rejected_before_any_request(make_client, rerank_service):
    client = make_client()
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        client.rerank(QUERY, DOCUMENTS, top_n=0)
    with pytest.raises(TypeError, match="not one string"):
        client.rerank(QUERY, "a single string")
    with pytest.raises(ValueError, match="RERANK_KEY is empty"):
        RerankClient(rerank_service.url, "", "cohere-rerank-3-5")
    assert rerank_service.requests == []


# --- rate limiter ---------------------------------------------------------------------------


def _most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of times inside any half-open window [t, t + window)."""
    return max(sum(start <= other < start + window for other in times) for start in times)


def test_limiter_paces_evenly_at_98_percent_of_the_limit(fake_clock):
    limiter = RequestRateLimiter(250, clock=fake_clock, sleep=fake_clock.sleep)
    admitted = [limiter.acquire() for _ in range(600)]

    interval = 60 / (250 * 0.98)
    assert limiter.slot_interval == pytest.approx(interval)
    assert admitted[0] == 1000.0
    assert all(later - earlier == pytest.approx(interval) for earlier, later in pairwise(admitted))
    # No burst ever: at most 245 of the 250 allowed in any minute, sustained over ten minutes' worth.
    assert _most_in_any_window(admitted, 60.0 - 1e-6) == 245
    assert (len(admitted) - 1) / (admitted[-1] - admitted[0]) * 60 == pytest.approx(245)


def test_limiter_saves_no_credit_while_idle(fake_clock):
    limiter = RequestRateLimiter(60, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep)
    limiter.acquire()
    fake_clock.sleep(600)

    assert [limiter.acquire() for _ in range(3)] == [1600.0, 1601.0, 1602.0]


def test_limiter_push_back_delays_every_later_slot(fake_clock):
    limiter = RequestRateLimiter(100, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep)
    first = limiter.acquire()
    limiter.push_back(12.5)
    limiter.push_back(3.0)

    assert limiter.acquire() == first + 12.5
    assert limiter.acquire() == pytest.approx(first + 12.5 + 0.6)


def test_a_slot_reserved_before_a_push_back_is_not_used_during_it(fake_clock):
    def sleep_while_a_429_arrives(seconds: float) -> None:
        fake_clock.sleep(seconds)
        if len(fake_clock.sleeps) == 1:
            limiter.push_back(10)

    limiter = RequestRateLimiter(60, pacing_share=1.0, clock=fake_clock, sleep=sleep_while_a_429_arrives)
    assert limiter.acquire() == 1000.0
    # The second caller's slot is 1001; while it sleeps, a 429 holds everyone until 1011.
    assert limiter.acquire() == 1011.0


def test_limiter_refuses_a_wait_past_the_deadline_and_reserves_nothing(fake_clock):
    limiter = RequestRateLimiter(60, pacing_share=1.0, clock=fake_clock, sleep=fake_clock.sleep)
    limiter.acquire()
    limiter.push_back(3600)
    with pytest.raises(RateLimitWaitExceeded) as caught:
        limiter.acquire(deadline=fake_clock() + 120)

    assert caught.value.wait_seconds == 3600 and fake_clock.sleeps == []
    assert limiter.acquire(deadline=fake_clock() + 4000) == 1000.0 + 3600


def test_limiter_paces_across_threads():
    limiter = RequestRateLimiter(5, window_seconds=0.2)
    admitted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            stamp = limiter.acquire()
            with lock:
                admitted.append(stamp)

    run_concurrently(worker, threads=4)

    stamps = sorted(admitted)
    assert len(stamps) == 20
    assert all(later - earlier == pytest.approx(limiter.slot_interval) for earlier, later in pairwise(stamps))
    assert _most_in_any_window(stamps, 0.2) <= 5


# --- rerank_many ----------------------------------------------------------------------------


def _requests(*queries: str) -> list[RerankRequest]:
    return [RerankRequest(f"q{number}", query, DOCUMENTS, top_n=2) for number, query in enumerate(queries)]


def test_rerank_many_runs_queries_in_parallel(start_service, make_client):
    service = start_service(added_latency_seconds=0.3)
    client = make_client(base_url=service.url, sleep=time.sleep, clock=time.monotonic)
    outcomes = client.rerank_many(_requests(*(f"{QUERY} {n}" for n in range(6))), max_workers=6)

    assert [outcome.query_id for outcome in outcomes] == [f"q{n}" for n in range(6)]
    assert all(outcome.ok and len(outcome.response.results) == 2 for outcome in outcomes)
    logged = service.requests
    assert len(logged) == 6
    # Every request arrived before any finished: they were all in flight at once.
    assert max(entry.received_at for entry in logged) < min(entry.finished_at for entry in logged)
    stats = RerankStats.from_outcomes(outcomes)
    assert stats.latency_p50_seconds >= 0.3


def test_rerank_many_isolates_failing_queries(make_client, rerank_service):
    rerank_service.faults.add("500", times=None, text="fails")
    reported: list[RerankOutcome] = []
    outcomes = make_client(max_attempts=2).rerank_many(
        _requests(QUERY, "", "fails", "database pool size"), max_workers=4, on_result=reported.append
    )

    assert [outcome.ok for outcome in outcomes] == [True, False, False, True]
    assert outcomes[1].error_type == "RerankBadRequest" and "query must be a non-empty string" in outcomes[1].detail
    assert outcomes[2].error_type == "RerankServerError" and outcomes[2].detail.startswith("RerankServerError: ")
    assert [outcome.error for outcome in outcomes] == [None, "http_400", "http_500", None]
    assert sorted(outcome.query_id for outcome in reported) == ["q0", "q1", "q2", "q3"]
    stats = RerankStats.from_outcomes(outcomes)
    assert (stats.queries, stats.succeeded, stats.failed, stats.cache_hits) == (4, 2, 2, 0)
    assert (stats.calls, stats.retries, stats.rate_limited, stats.search_units) == (5, 1, 0, 2)
    assert stats.calls == len(rerank_service.requests)


def test_rerank_many_aborts_on_a_configuration_error(make_client, rerank_service):
    client = make_client(api_key="wrong-key-0000")
    with pytest.raises(RerankUnauthorized):
        client.rerank_many(_requests(*(f"query {n}" for n in range(40))), max_workers=2)

    # Only the requests already in flight (one per worker, give or take a race) reach the service.
    assert len(rerank_service.requests) <= 4


def test_rerank_many_aborts_on_a_rejected_setting(start_service, make_client):
    service = start_service(max_documents=3)
    with pytest.raises(RerankSettingRejected):
        make_client(base_url=service.url).rerank_many(_requests(*(f"query {n}" for n in range(40))), max_workers=2)

    assert len(service.requests) <= 4


def test_rerank_many_serves_repeats_from_the_cache(make_client, rerank_service):
    client = make_client()
    cache = InMemoryRerankCache()
    requests = _requests(QUERY, "database pool size", "bananas")
    first = client.rerank_many(requests, cache=cache)
    calls_after_first = len(rerank_service.requests)
    second = client.rerank_many(requests, cache=cache)

    assert calls_after_first == 3 and len(cache) == 3
    assert len(rerank_service.requests) == calls_after_first
    assert all(outcome.cached and outcome.response.search_units == 0 for outcome in second)
    assert [o.response.results for o in second] == [o.response.results for o in first]
    stats = RerankStats.from_outcomes(second)
    assert (stats.calls, stats.cache_hits, stats.search_units) == (0, 3, 0)
    assert stats.latency_p50_seconds is None


def test_cache_key_covers_endpoint_model_query_documents_and_top_n_but_not_their_order():
    local = "http://127.0.0.1:8765"
    base = cache_key(local, "cohere-rerank-3-5", "q", ["a", "b"], 3)
    assert base == cache_key(local, "cohere-rerank-3-5", "q", ["a", "b"], 3)
    # A rebuilt index may return the same candidates in another order: same scores, same key.
    assert base == cache_key(local, "cohere-rerank-3-5", "q", ["b", "a"], 3)
    variants = [
        cache_key("https://us.inference.heroku.com", "cohere-rerank-3-5", "q", ["a", "b"], 3),
        cache_key(local, "amazon-rerank-1-0", "q", ["a", "b"], 3),
        cache_key(local, "cohere-rerank-3-5", "q2", ["a", "b"], 3),
        cache_key(local, "cohere-rerank-3-5", "q", ["a", "b "], 3),
        cache_key(local, "cohere-rerank-3-5", "q", ["a", "b", "b"], 3),
        cache_key(local, "cohere-rerank-3-5", "q", ["a", "b"], None),
    ]
    assert len({base, *variants}) == 7 and len(base) == 64


def test_candidates_in_another_order_are_served_from_the_cache_with_their_own_scores(make_client, rerank_service):
    client = make_client()
    cache = InMemoryRerankCache()
    documents = [*DOCUMENTS, DOCUMENTS[1]]  # a duplicate text too: both copies keep a score
    [first] = client.rerank_many([RerankRequest("q1", QUERY, documents)], cache=cache)
    shuffled = [documents[i] for i in (3, 1, 4, 0, 2)]
    [again] = client.rerank_many([RerankRequest("q1", QUERY, shuffled)], cache=cache)

    assert len(rerank_service.requests) == 1
    assert again.cached and again.response.search_units == 0
    scores = {documents[r.index]: r.relevance_score for r in first.response.results}
    assert {shuffled[r.index]: r.relevance_score for r in again.response.results} == scores
    assert sorted(r.index for r in again.response.results) == [0, 1, 2, 3, 4]
    ranked = [r.relevance_score for r in again.response.results]
    assert ranked == sorted(ranked, reverse=True)
    # An entry naming a document the request does not hold is not served: the query is sent.
    unusable = InMemoryRerankCache()
    unusable.put(
        cache_key(client.base_url, client.model, QUERY, shuffled, None),
        {"scores_by_document": [["0" * 64, 0.5]], "api_version": "2", "is_experimental": False},
    )
    [sent] = client.rerank_many([RerankRequest("q1", QUERY, shuffled)], cache=unusable)
    assert not sent.cached and sent.response.search_units == 1 and len(rerank_service.requests) == 2


def test_the_endpoint_is_normalised_and_never_carries_credentials():
    assert endpoint_of("https://user:s3cret@US.Inference.heroku.com:443/") == "https://us.inference.heroku.com"
    assert endpoint_of("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    client = RerankClient("https://user:s3cret@inference.example/", "key", "cohere-rerank-3-5")
    assert "s3cret" not in repr(client) and client.base_url == "https://inference.example"
    client.close()


def test_switching_endpoints_on_one_cache_calls_the_new_endpoint(make_client, rerank_service, start_service):
    other = start_service()
    cache = InMemoryRerankCache()
    requests = _requests(QUERY, "database pool size")
    make_client().rerank_many(requests, cache=cache)
    switched = make_client(base_url=other.url).rerank_many(requests, cache=cache)

    assert not any(outcome.cached for outcome in switched)
    assert len(rerank_service.requests) == len(other.requests) == 2
    assert all(outcome.response.search_units == 1 for outcome in switched)


def test_stats_percentiles_use_nearest_rank():
    outcomes = [
        RerankOutcome.succeeded(f"q{n}", RerankResponse((), "2", False, 1, 1, 0, 0, latency_seconds=float(n)))
        for n in range(1, 21)
    ]
    stats = RerankStats.from_outcomes(outcomes)
    assert (stats.latency_p50_seconds, stats.latency_p95_seconds) == (10.0, 19.0)
    assert stats.search_units == 20 and stats.calls == 20
