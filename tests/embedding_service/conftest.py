"""Fixtures: the local embeddings stand-in on 127.0.0.1 (ephemeral port), with all-MiniLM-L6-v2 or hashed vectors."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from pipeline.embedding import MiniLMEmbedder
from pipeline.local import EmbeddingServiceConfig, HashedVectors, LocalEmbeddingService

# Distinctive so that a leak is unmistakable when logs and messages are searched for it.
API_KEY = "inf-embed-5d2c8b1e9f4a7c3d"
MODEL = "cohere-embed-multilingual"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def _shared_service(minilm: MiniLMEmbedder) -> Iterator[LocalEmbeddingService]:
    config = EmbeddingServiceConfig(api_key=API_KEY, test_mode=True)
    with LocalEmbeddingService(config, vectors=minilm, warm=True) as service:
        yield service


@pytest.fixture
def embedding_service(_shared_service: LocalEmbeddingService) -> LocalEmbeddingService:
    """The default stand-in (MiniLM vectors, test mode, no limits), with an empty request log and no queued faults."""
    _shared_service.service.clear()
    return _shared_service


@pytest.fixture
def start_service() -> Iterator[Callable[..., LocalEmbeddingService]]:
    """Start a stand-in with config overrides (test_mode on, hashed vectors by default); stopped after the test."""
    started: list[LocalEmbeddingService] = []

    def start(vectors=None, **overrides) -> LocalEmbeddingService:
        config = EmbeddingServiceConfig(**{"api_key": API_KEY, "test_mode": True, **overrides})
        service = LocalEmbeddingService(config, vectors=vectors or HashedVectors())
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def post(embedding_service: LocalEmbeddingService, api_key: str) -> Iterator[Callable[..., httpx.Response]]:
    """POST a JSON body to /v1/embeddings with the key; ``service`` (default: the shared one), ``headers`` and
    ``content`` (sent instead of the body) may be given."""
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {api_key}"}) as http:

        def send(request_body=None, *, service=None, **options) -> httpx.Response:
            return http.post(f"{(service or embedding_service).url}/v1/embeddings", json=request_body, **options)

        yield send


def body(**overrides) -> dict:
    return {"model": MODEL, "input": ["Connection pooling reuses database connections."], **overrides}


def vectors_of(response: httpx.Response) -> np.ndarray:
    """The response's vectors in input order, decoded from raw floats or base64 (little-endian float32)."""
    data = sorted(response.json()["data"], key=lambda item: item["index"])
    return np.array(
        [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            if isinstance(item["embedding"], str)
            else item["embedding"]
            for item in data
        ],
        dtype=np.float32,
    )
