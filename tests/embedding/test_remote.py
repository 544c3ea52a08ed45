"""HerokuEmbedder against a /v1/embeddings server on loopback: batching, input types, answers, failures."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.embedding.contract import MAX_INPUT_CHARACTERS, SEARCH_DOCUMENT, SEARCH_QUERY
from pipeline.embedding.errors import (
    EmbeddingBadRequest,
    EmbeddingBatchesFailed,
    EmbeddingForbidden,
    EmbeddingModelNotFound,
    EmbeddingProtocolError,
    EmbeddingSettingRejected,
    EmbeddingUnauthorized,
    InputTooLong,
)
from pipeline.inference import InferenceError
from tests.embedding.conftest import API_KEY, DIMENSIONS, MODEL, encoded, expected_vector, server_vector

PASSAGES = [f"Passage {number}: connection pooling with {number % 7} workers." for number in range(200)]


def _collect(embedder, texts):
    """Every (position, vector) handed on, checked to be each position at most once."""
    vectors: dict[int, np.ndarray] = {}
    for positions, batch in embedder.iter_document_batches(texts):
        assert batch.shape == (len(positions), DIMENSIONS) and batch.dtype == np.float32
        for position, vector in zip(positions, batch, strict=True):
            assert position not in vectors
            vectors[position] = vector
    return vectors


def test_passages_go_in_batches_of_96_as_search_document_and_come_back_as_unit_vectors_in_input_order(
    make_embedder, contract_server
):
    vectors = _collect(make_embedder(), PASSAGES)

    assert sorted(len(request.input) for request in contract_server.received) == [8, 96, 96]
    assert {request.input_type for request in contract_server.received} == {SEARCH_DOCUMENT}
    assert {(r.encoding_format, r.embedding_type) for r in contract_server.received} == {("base64", "float")}
    assert sorted(vectors) == list(range(len(PASSAGES)))
    for position, text in enumerate(PASSAGES):
        np.testing.assert_allclose(vectors[position], expected_vector(text, SEARCH_DOCUMENT), atol=1e-6)
    assert np.allclose(np.linalg.norm(np.stack(list(vectors.values())), axis=1), 1.0, atol=1e-6)


def test_a_smaller_request_size_is_honoured(make_embedder, contract_server):
    _collect(make_embedder(inputs_per_request=50), PASSAGES)

    assert sorted(len(request.input) for request in contract_server.received) == [50, 50, 50, 50]


def test_questions_go_as_search_query(make_embedder, contract_server):
    embedder = make_embedder()
    questions = ["How do I size the pool?", "What is max_connections?"]

    vectors = embedder.embed_queries(questions)

    assert [request.input_type for request in contract_server.received] == [SEARCH_QUERY]
    for vector, question in zip(vectors, questions, strict=True):
        np.testing.assert_allclose(vector, expected_vector(question, SEARCH_QUERY), atol=1e-6)
        assert not np.allclose(vector, expected_vector(question, SEARCH_DOCUMENT), atol=1e-3)
    assert embedder.embed_queries([]).shape == (0, DIMENSIONS)


@pytest.mark.parametrize("encoding_format", ["raw", "base64"])
def test_raw_and_base64_answers_give_the_same_vectors(make_embedder, contract_server, encoding_format):
    vectors = _collect(make_embedder(encoding_format=encoding_format), PASSAGES[:10])

    assert {request.encoding_format for request in contract_server.received} == {encoding_format}
    for position, text in enumerate(PASSAGES[:10]):
        np.testing.assert_allclose(vectors[position], expected_vector(text, SEARCH_DOCUMENT), atol=1e-6)


def test_an_answer_in_the_other_encoding_than_asked_for_is_read_too(make_embedder, contract_server):
    def raw_anyway(request):
        data = [
            {"index": i, "embedding": encoded(server_vector(text, request.input_type), "raw")}
            for i, text in enumerate(request.input)
        ]
        return 200, {"data": data}, {}

    contract_server.fault = raw_anyway
    [vector] = make_embedder(encoding_format="base64").embed_queries(["pool size"])

    np.testing.assert_allclose(vector, expected_vector("pool size", SEARCH_QUERY), atol=1e-6)


def _answer_with(data):
    return lambda request: (200, {"data": data(request)}, {})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 0, "embedding": [0.0, 1.0]}], "two embeddings"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}], "1 embeddings for 2 inputs"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 2, "embedding": [0.0, 1.0]}], "outside"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [0.0, 1.0, 0.0]}], "lengths"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": ["1", "0"]}], "neither"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": "AAAA%%"}], "neither"),
        (lambda r: [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [0.0, 0.0]}], "non-zero"),
        (lambda r: [{"index": "0", "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [0.0, 1.0]}], "integer"),
    ],
)
def test_an_answer_that_breaks_the_contract_fails_without_a_retry(make_embedder, contract_server, data, reason):
    contract_server.fault = _answer_with(data)

    with pytest.raises(EmbeddingProtocolError, match=reason) as failed:
        make_embedder().embed_queries(["first", "second"])

    assert failed.value.code == "invalid_response"
    assert len(contract_server.received) == 1


def test_vectors_of_another_length_than_earlier_answers_are_refused(make_embedder, contract_server):
    embedder = make_embedder()
    embedder.embed_queries(["first"])
    contract_server.fault = _answer_with(lambda request: [{"index": 0, "embedding": [1.0] * (DIMENSIONS + 1)}])

    with pytest.raises(EmbeddingProtocolError, match=f"{DIMENSIONS + 1}-dimensional embeddings where earlier"):
        embedder.embed_queries(["second"])
    assert embedder.dimensions == DIMENSIONS


def test_the_model_names_the_server_it_comes_from(make_embedder, contract_server):
    embedder = make_embedder()

    assert embedder.model == f"{MODEL}@{contract_server.url.removeprefix('http://')}"
    assert embedder.model_id == MODEL


def test_an_input_over_the_character_cap_is_refused_before_anything_is_sent(make_embedder, contract_server):
    texts = ["short"] * 5 + ["x" * (MAX_INPUT_CHARACTERS + 1)] + ["short"] * 200
    embedder = make_embedder()

    with pytest.raises(InputTooLong, match="input 5 has 2,049 characters, more than the 2,048"):
        list(embedder.iter_document_batches(texts))
    with pytest.raises(InputTooLong, match="input 1 "):
        embedder.embed_queries(["short", "y" * (MAX_INPUT_CHARACTERS + 1)])
    assert contract_server.received == []
    _collect(embedder, ["z" * MAX_INPUT_CHARACTERS])
    assert len(contract_server.received) == 1


def test_a_wrong_key_fails_naming_embedding_key_and_stops_sending(make_embedder, contract_server):
    embedder = make_embedder(api_key="emb-wrong-key-0000")

    with pytest.raises(EmbeddingUnauthorized, match="EMBEDDING_KEY was rejected") as refused:
        embedder.embed_queries(["pool size"])
    assert refused.value.code == "http_401"
    with pytest.raises(EmbeddingBatchesFailed) as failed:
        _collect(embedder, PASSAGES)

    assert isinstance(failed.value.cause, EmbeddingUnauthorized)
    assert "EMBEDDING_KEY" in str(failed.value)
    # The first batch's 401 stops the rest: nothing more is sent, every input is without a vector.
    assert failed.value.failed_positions == tuple(range(len(PASSAGES)))
    assert failed.value.codes == {"http_401": 3} and failed.value.code == "http_401"
    assert isinstance(failed.value, InferenceError)


def test_no_access_to_the_model_names_the_key_and_the_model_setting(make_embedder, contract_server):
    contract_server.fault = lambda request: (403, {"message": "forbidden"}, {})

    with pytest.raises(EmbeddingForbidden) as refused:
        make_embedder().embed_queries(["pool size"])

    assert "EMBEDDING_KEY has no access to model cohere-embed-multilingual" in str(refused.value)
    assert "EMBEDDING_MODEL_ID" in str(refused.value)


def test_an_unknown_model_names_embedding_model_id(make_embedder, contract_server):
    with pytest.raises(EmbeddingModelNotFound, match="unknown model cohere-embed-english") as refused:
        make_embedder(model_id="cohere-embed-english").embed_queries(["pool size"])

    assert "check EMBEDDING_MODEL_ID" in str(refused.value) and "cohere-embed-multilingual" in str(refused.value)
    assert len(contract_server.received) == 0  # refused before the body checks


def test_a_429_without_retry_after_is_retried_after_a_wait(make_embedder, contract_server, fake_clock):
    answered = []

    def limited_twice(request):
        answered.append(request)
        return (429, {"message": "slow down"}, {}) if len(answered) <= 2 else None

    contract_server.fault = limited_twice
    embedder = make_embedder()
    [vector] = embedder.embed_queries(["pool size"])

    np.testing.assert_allclose(vector, expected_vector("pool size", SEARCH_QUERY), atol=1e-6)
    assert len(contract_server.received) == 3
    assert (embedder.stats.requests, embedder.stats.retries, embedder.stats.rate_limited) == (3, 2, 2)
    assert len(fake_clock.sleeps) >= 2 and all(wait > 0 for wait in fake_clock.sleeps)


def _batch_with(word):
    return lambda request: any(word in text for text in request.input)


def test_a_400_for_one_batch_is_not_retried_and_the_other_batches_are_kept(make_embedder, contract_server):
    texts = list(PASSAGES)
    texts[100] = "bad input"
    is_bad = _batch_with("bad input")
    contract_server.fault = lambda request: (400, {"message": "input rejected"}, {}) if is_bad(request) else None

    vectors: dict[int, np.ndarray] = {}
    with pytest.raises(EmbeddingBatchesFailed) as failed:
        for positions, batch in make_embedder().iter_document_batches(texts):
            vectors.update(zip(positions, batch, strict=True))

    assert sum(1 for request in contract_server.received if is_bad(request)) == 1
    assert isinstance(failed.value.cause, EmbeddingBadRequest)
    assert failed.value.codes == {"http_400": 1}
    assert failed.value.failed_positions == tuple(range(96, 192))
    assert sorted(vectors) == [*range(96), *range(192, 200)]


def test_a_400_rejecting_a_shared_setting_stops_every_batch(make_embedder, contract_server):
    contract_server.fault = lambda request: (400, {"message": "encoding_format base64 is not supported"}, {})

    with pytest.raises(EmbeddingBatchesFailed) as failed:
        _collect(make_embedder(), PASSAGES)

    assert isinstance(failed.value.cause, EmbeddingSettingRejected) and failed.value.cause.setting == "encoding_format"
    assert len(contract_server.received) == 1 and failed.value.codes == {"http_400": 3}


def test_a_batch_that_keeps_failing_does_not_cost_the_others(make_embedder, contract_server):
    texts = list(PASSAGES) + [f"more text {number}" for number in range(300)]
    texts[150] = "poison"
    poisoned = _batch_with("poison")
    contract_server.fault = lambda request: (500, {"message": "internal error"}, {}) if poisoned(request) else None
    embedder = make_embedder(max_attempts=3, concurrent_requests=3)

    vectors: dict[int, np.ndarray] = {}
    with pytest.raises(EmbeddingBatchesFailed) as failed:
        for positions, batch in embedder.iter_document_batches(texts):
            vectors.update(zip(positions, batch, strict=True))

    assert failed.value.failed_positions == tuple(range(96, 192))
    assert failed.value.codes == {"http_500": 1} and failed.value.batches == 6
    assert "1 of 6 embedding batches failed (1 × http_500; 96 inputs without a vector)" in str(failed.value)
    assert sum(1 for request in contract_server.received if poisoned(request)) == 3
    assert sorted(vectors) == [p for p in range(len(texts)) if not 96 <= p < 192]
    for position in (0, 95, 192, 499):
        np.testing.assert_allclose(vectors[position], expected_vector(texts[position], SEARCH_DOCUMENT), atol=1e-6)
    assert (embedder.stats.batches, embedder.stats.batches_failed) == (6, 1)


def test_the_key_appears_in_no_error_repr_or_log_even_when_the_server_echoes_it(make_embedder, contract_server, caplog):
    caplog.set_level(logging.DEBUG)
    contract_server.fault = lambda request: (500, {"message": f"bad header Authorization: Bearer {API_KEY}"}, {})
    embedder = make_embedder(max_attempts=2)

    with pytest.raises(EmbeddingBatchesFailed) as failed:
        _collect(embedder, PASSAGES[:10])
    with pytest.raises(InferenceError) as raised:
        embedder.embed_queries(["pool size"])

    shown = [
        str(failed.value),
        repr(failed.value),
        str(failed.value.cause),
        str(raised.value),
        repr(raised.value),
        repr(embedder),
        caplog.text,
    ]
    assert "[REDACTED]" in str(raised.value) and any("retry 1 of 1" in r.getMessage() for r in caplog.records)
    for text in shown:
        assert API_KEY not in text and API_KEY[4:] not in text
