"""The local rerank service's contract, exercised with raw HTTP requests on loopback."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from pipeline.local import LocalRerankService, ServiceConfig

MODEL = "cohere-rerank-3-5"
QUERY = "How do I optimize database connection pooling?"
DOCUMENTS = [
    "Connection pooling reduces overhead by reusing existing connections.",
    "You can monitor application performance using built-in metrics.",
    "Set max pool size based on your dyno count and concurrent queries.",
]


@pytest.fixture
def post(rerank_service, api_key):
    """POST /v1/rerank to the default service: ``post(body, headers=..., content=...)``.

    The stand-in embeds every document it has not seen: 1,000 of them took 13 s on a loaded 2-core
    machine, so the client waits long enough for that; no test here is about the service's speed."""
    with httpx.Client(base_url=rerank_service.url, timeout=120) as http:

        def send(body=None, *, headers=None, content=None, service=None) -> httpx.Response:
            url = f"{(service or rerank_service).url}/v1/rerank"
            headers = {"Authorization": f"Bearer {api_key}", **(headers or {})}
            if content is not None:
                return http.post(url, content=content, headers=headers)
            return http.post(url, json=body, headers=headers)

        yield send


def body(**overrides):
    return {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, **overrides}


def test_health(rerank_service):
    assert httpx.get(f"{rerank_service.url}/health").json() == {"status": "ok"}


def test_success_follows_the_contract(post, rerank_service):
    response = post(body())

    assert response.status_code == 200
    payload = response.json()
    assert payload["id"]
    assert payload["meta"] == {
        "api_version": {"version": "2", "is_experimental": False},
        "billed_units": {"search_units": 1},
    }
    results = payload["results"]
    assert sorted(result["index"] for result in results) == [0, 1, 2]
    scores = [result["relevance_score"] for result in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= score <= 1 for score in scores)
    assert results[0]["index"] == 0
    [logged] = rerank_service.requests
    assert (logged.status, logged.model, logged.query, logged.documents, logged.top_n) == (
        200,
        MODEL,
        QUERY,
        tuple(DOCUMENTS),
        None,
    )
    assert logged.authorized and logged.received_at <= logged.finished_at


@pytest.mark.parametrize(("top_n", "expected"), [(1, 1), (2, 2), (3, 3), (50, 3), (None, 3)])
def test_top_n_is_capped_at_the_document_count(post, top_n, expected):
    response = post(body(top_n=top_n))
    results = response.json()["results"]

    assert len(results) == expected
    full = post(body()).json()["results"]
    assert results == full[:expected]


@pytest.mark.parametrize(("count", "units"), [(1, 1), (100, 1), (101, 2), (1000, 10)])
def test_billing_is_one_unit_per_100_documents(post, count, units):
    documents = [f"note {position}" for position in range(count)]
    assert post(body(documents=documents)).json()["meta"]["billed_units"]["search_units"] == units


@pytest.mark.parametrize(
    ("request_body", "content", "message"),
    [
        (None, b"{not json", "not valid JSON"),
        (None, b"\xff\xfe", "not valid JSON"),
        ([1, 2], None, "must be a JSON object"),
        ({"query": QUERY, "documents": DOCUMENTS}, None, "missing required field: model"),
        ({"model": MODEL, "documents": DOCUMENTS}, None, "missing required field: query"),
        (body(query=""), None, "query must be a non-empty string"),
        (body(query=7), None, "query must be a non-empty string"),
        ({"model": MODEL, "query": QUERY}, None, "missing required field: documents"),
        (body(documents="one string"), None, "documents must be a list of strings"),
        (body(documents=["ok", 3]), None, "documents must be a list of strings"),
        (body(documents=[{"text": "object form"}]), None, "documents must be a list of strings"),
        (body(documents=[]), None, "documents must not be empty"),
        (body(documents=["d"] * 1001), None, "too many documents: 1001"),
        (body(top_n=0), None, "top_n must be a positive integer"),
        (body(top_n=-2), None, "top_n must be a positive integer"),
        (body(top_n="3"), None, "top_n must be a positive integer"),
        (body(top_n=1.5), None, "top_n must be a positive integer"),
        (body(top_n=True), None, "top_n must be a positive integer"),
    ],
)
def test_invalid_requests_get_400(post, rerank_service, request_body, content, message):
    response = post(request_body, content=content)

    assert response.status_code == 400
    assert message in response.json()["message"]
    assert [logged.status for logged in rerank_service.requests] == [400]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": ""}, "missing Authorization header"),
        ({"Authorization": "Bearer not-the-key"}, "invalid bearer token"),
        ({"Authorization": "Basic inf-test-7c1f9a2e4b6d8e0f"}, "invalid bearer token"),
    ],
    ids=["missing", "wrong-key", "wrong-scheme"],
)
def test_bad_tokens_get_401(post, rerank_service, headers, message):
    response = post(body(), headers=headers)

    assert response.status_code == 401 and message in response.json()["message"]
    [logged] = rerank_service.requests
    assert not logged.authorized and logged.model is None and logged.documents is None


def test_unknown_model_gets_404_listing_the_models(post):
    response = post(body(model="cohere-rerank-v9"))

    assert response.status_code == 404
    assert "cohere-rerank-3-5, amazon-rerank-1-0" in response.json()["message"]


def test_model_not_attached_gets_403(start_service, post):
    service = start_service(allowed_models=["amazon-rerank-1-0"])

    assert post(body(), service=service).status_code == 403
    assert post(body(model="amazon-rerank-1-0"), service=service).status_code == 200


def test_rate_limit_is_per_model_with_retry_after(start_service, post):
    service = start_service(requests_per_minute=2)
    statuses = [post(body(), service=service).status_code for _ in range(2)]
    limited = post(body(), service=service)

    assert statuses == [200, 200] and limited.status_code == 429
    assert 58 <= int(limited.headers["Retry-After"]) <= 60
    assert post(body(model="amazon-rerank-1-0"), service=service).status_code == 200


def test_rate_limit_can_omit_retry_after(start_service, post):
    service = start_service(requests_per_minute=1, omit_retry_after=True)
    post(body(), service=service)
    limited = post(body(), service=service)

    assert limited.status_code == 429 and "retry-after" not in limited.headers


@pytest.mark.parametrize(
    ("fault", "status"),
    [("500", 500), ("429", 429), ("400", 400), ("malformed", 200)],
)
def test_fault_header_forces_one_fault(post, rerank_service, fault, status):
    response = post(body(), headers={"X-Fault": fault})

    assert response.status_code == status
    if fault == "429":
        assert response.headers["Retry-After"] == "1"
    if fault == "malformed":
        with pytest.raises(ValueError):
            response.json()
    assert rerank_service.requests[0].fault == fault
    assert post(body()).status_code == 200


def test_garbled_fault_sends_a_body_its_encoding_does_not_describe(post, rerank_service, api_key):
    with httpx.Client(timeout=10) as http:
        response = http.send(
            http.build_request(
                "POST",
                f"{rerank_service.url}/v1/rerank",
                json=body(),
                headers={"Authorization": f"Bearer {api_key}", "X-Fault": "garbled"},
            ),
            stream=True,
        )
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
        with pytest.raises(httpx.DecodingError):
            response.read()
    assert rerank_service.requests[0].fault == "garbled"


def test_a_stricter_document_limit_is_a_400(start_service, post):
    service = start_service(max_documents=2)
    response = post(body(), service=service)

    assert response.status_code == 400
    assert response.json()["message"] == "too many documents: 3 (at most 2 per request)"
    assert post(body(documents=DOCUMENTS[:2]), service=service).status_code == 200


def test_each_request_is_logged_without_the_token_or_texts(post, rerank_service, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    post(body())
    post(body(), headers={"Authorization": "Bearer inf-wrong-1234abcd"})
    post(body(), headers={"X-Fault": "500"})

    lines = [record.getMessage() for record in caplog.records if record.name == "pipeline.local.rerank_service"]
    assert len(lines) == 3
    assert lines[0].startswith(f"rerank 200 model={MODEL} documents=3 top_n=None authorized=True fault=-")
    assert lines[1].startswith("rerank 401 model=None documents=None") and "authorized=False" in lines[1]
    assert "fault=500" in lines[2]
    for text in (caplog.text, *lines):
        assert api_key not in text and "inf-wrong-1234abcd" not in text and QUERY not in text


def test_latency_fault_delays_a_normal_answer(post):
    started = time.monotonic()
    response = post(body(), headers={"X-Fault": "latency=0.3"})

    assert response.status_code == 200 and time.monotonic() - started >= 0.3


def test_unknown_fault_is_a_400_and_faults_need_test_mode(start_service, post):
    assert "unknown fault" in post(body(), headers={"X-Fault": "explode"}).json()["message"]
    production_like = start_service(test_mode=False)
    assert post(body(), headers={"X-Fault": "500"}, service=production_like).status_code == 200


def test_random_faults_follow_the_seed(start_service, post):
    def statuses(seed: int) -> list[int]:
        service = start_service(error_rate=0.3, malformed_rate=0.3, seed=seed)
        return [post(body(), service=service).status_code for _ in range(20)]

    first = statuses(seed=7)
    assert first == statuses(seed=7)
    assert 500 in first and 200 in first


def test_stopping_releases_a_hanging_request(scorer, api_key):
    service = LocalRerankService(ServiceConfig(api_key=api_key, test_mode=True), scorer=scorer)
    service.start()
    with httpx.Client(timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post(
            f"{service.url}/v1/rerank",
            json=body(),
            headers={"Authorization": f"Bearer {api_key}", "X-Fault": "timeout"},
        )
    started = time.monotonic()
    service.stop()

    assert time.monotonic() - started < 3
    with pytest.raises(RuntimeError, match="not running"):
        _ = service.url


def test_the_request_log_is_bounded(start_service, post):
    service = start_service(request_log_limit=3)
    for number in range(5):
        post(body(query=f"query {number}"), service=service)

    assert [logged.query for logged in service.requests] == ["query 2", "query 3", "query 4"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="api_key is empty"):
        ServiceConfig(api_key="")
    with pytest.raises(ValueError, match="error_rate"):
        ServiceConfig(api_key="k", error_rate=1.5)
    with pytest.raises(ValueError, match="unknown models"):
        ServiceConfig(api_key="k", allowed_models=["gpt-rerank"])
    with pytest.raises(ValueError, match="max_documents"):
        ServiceConfig(api_key="k", max_documents=1001)
    with pytest.raises(ValueError, match="requests_per_minute"):
        ServiceConfig(api_key="k", requests_per_minute=0)
    with pytest.raises(ValueError, match="added_latency_seconds"):
        ServiceConfig(api_key="k", added_latency_seconds=-1)
