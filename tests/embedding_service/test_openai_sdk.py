"""A client nobody here wrote: the official ``openai`` SDK, pointed at the stand-in the way Heroku's docs show.

Heroku's OpenAI-compatibility guide sets ``base_url=EMBEDDING_URL + "/v1/"`` and passes
``input_type`` as an extra body field. The SDK asks for ``encoding_format: base64`` unless told
otherwise and decodes the vectors itself, so its vectors must equal those of a plain request for
raw floats.
"""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from pipeline.embedding.remote import HerokuEmbedder
from tests.embedding_service.conftest import MODEL, vectors_of

PASSAGES = [
    "Connection pooling reduces overhead by reusing existing connections.",
    "Les index GIN accélèrent la recherche plein texte.",
    "Set max pool size based on your dyno count and concurrent queries.",
]


@pytest.fixture
def sdk(embedding_service, api_key):
    with openai.OpenAI(base_url=embedding_service.url + "/v1/", api_key=api_key, max_retries=0) as client:
        yield client


def test_the_sdk_gets_the_vectors_of_a_raw_request(sdk, embedding_service, api_key):
    created = sdk.embeddings.create(model=MODEL, input=PASSAGES, extra_body={"input_type": "search_document"})
    raw = httpx.post(
        f"{embedding_service.url}/v1/embeddings",
        json={"model": MODEL, "input": PASSAGES, "input_type": "search_document", "encoding_format": "raw"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )

    sdk_vectors = np.array([item.embedding for item in sorted(created.data, key=lambda item: item.index)])
    assert sdk_vectors.shape == (3, 384)
    np.testing.assert_allclose(sdk_vectors, vectors_of(raw), rtol=0, atol=1e-6)
    assert created.model == MODEL
    assert created.usage.prompt_tokens == created.usage.total_tokens == raw.json()["usage"]["prompt_tokens"] > 0
    sent_by_sdk, sent_raw = embedding_service.requests
    assert (sent_by_sdk.input_type, sent_by_sdk.encoding_format, sent_by_sdk.inputs) == (
        "search_document",
        "base64",
        tuple(PASSAGES),
    )
    assert sent_raw.encoding_format == "raw"


def test_the_sdk_and_our_client_get_the_same_vectors(sdk, embedding_service, api_key):
    created = sdk.embeddings.create(model=MODEL, input=PASSAGES, extra_body={"input_type": "search_document"})
    ours = HerokuEmbedder(embedding_service.url, api_key, MODEL)
    try:
        batches = list(ours.iter_document_batches(PASSAGES))
        query_vector = ours.embed_queries([PASSAGES[0]])[0]
    finally:
        ours.close()

    sdk_vectors = np.array([item.embedding for item in sorted(created.data, key=lambda item: item.index)])
    our_vectors = np.zeros_like(sdk_vectors)
    for positions, vectors in batches:
        our_vectors[positions] = vectors
    np.testing.assert_allclose(our_vectors, sdk_vectors, rtol=0, atol=1e-6)
    # The stand-in's vectors are unit length already; ours are normalised, so they differ only by rounding.
    np.testing.assert_allclose(query_vector, sdk_vectors[0], rtol=0, atol=1e-6)
    by_sdk, by_us, query = embedding_service.requests
    assert (by_us.input_type, by_us.inputs) == ("search_document", tuple(PASSAGES))
    assert (query.input_type, by_sdk.input_type) == ("search_query", "search_document")


def test_the_sdk_sends_questions_as_search_queries(sdk, embedding_service):
    sdk.embeddings.create(model=MODEL, input=["How do I size a pool?"], extra_body={"input_type": "search_query"})

    [sent] = embedding_service.requests
    assert (sent.input_type, sent.encoding_format, sent.status) == ("search_query", "base64", 200)


def test_the_sdk_reads_the_stand_ins_errors(sdk, embedding_service):
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.embeddings.create(model=MODEL, input=["x"] * 97)
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="text-embedding-3-small", input=PASSAGES)
    stranger = openai.OpenAI(base_url=embedding_service.url + "/v1/", api_key="inf-wrong-key", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.embeddings.create(model=MODEL, input=PASSAGES)

    assert (
        "too many inputs: 97" in too_many.value.response.json()["message"]
    )  # the error shape is Heroku's, not OpenAI's
    assert [sent.status for sent in embedding_service.requests] == [400, 404, 401]
