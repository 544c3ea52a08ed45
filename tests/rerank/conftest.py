"""Fixtures: the local rerank service on 127.0.0.1 (ephemeral port) and clients with a fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeline.local import LocalRelevanceScorer, LocalRerankService, ServiceConfig
from pipeline.rerank import RerankClient
from pipeline.stand_ins import local_scorer
from tests.clock import FakeClock

# Distinctive so that a leak is unmistakable when logs and messages are searched for it.
API_KEY = "inf-test-7c1f9a2e4b6d8e0f"
MODEL = "cohere-rerank-3-5"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def scorer() -> LocalRelevanceScorer:
    scorer = local_scorer()
    scorer.warm()
    return scorer


@pytest.fixture
def start_service(scorer: LocalRelevanceScorer) -> Iterator[Callable[..., LocalRerankService]]:
    """Start a service with ServiceConfig overrides (test_mode on by default); stopped after the test."""
    started: list[LocalRerankService] = []

    def start(**overrides) -> LocalRerankService:
        config = ServiceConfig(**{"api_key": API_KEY, "test_mode": True, **overrides})
        service = LocalRerankService(config, scorer=scorer)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def _shared_service(scorer: LocalRelevanceScorer) -> Iterator[LocalRerankService]:
    with LocalRerankService(ServiceConfig(api_key=API_KEY, test_mode=True), scorer=scorer) as service:
        yield service


@pytest.fixture
def rerank_service(_shared_service: LocalRerankService) -> LocalRerankService:
    """The default service (test mode), with an empty request log and no queued faults."""
    _shared_service.service.clear()
    return _shared_service


@pytest.fixture
def clients() -> Iterator[list[RerankClient]]:
    """Clients a test made; closed after it."""
    made: list[RerankClient] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def make_client(
    rerank_service: LocalRerankService, fake_clock: FakeClock, clients: list[RerankClient]
) -> Callable[..., RerankClient]:
    """Clients of ``rerank_service`` that sleep on ``fake_clock`` (so backoffs are recorded, not waited)."""

    def make(**overrides) -> RerankClient:
        options = {
            "base_url": rerank_service.url,
            "api_key": API_KEY,
            "model": MODEL,
            "timeout": 5.0,
            "sleep": fake_clock.sleep,
            "clock": fake_clock,
            "rng": random.Random(1),
            # A 1 ms pacing interval, shorter than any backoff these tests record, so fake_clock.sleeps
            # holds the retry delays alone; the pacing tests set their own rate.
            "requests_per_minute": 60_000,
            **overrides,
        }
        client = RerankClient(**options)
        clients.append(client)
        return client

    return make


@pytest.fixture
def mock_client(fake_clock: FakeClock, clients: list[RerankClient]) -> Callable[..., RerankClient]:
    """Clients whose server is a function (request → response), for answers the local service never gives."""

    def make(handler: Callable[[httpx.Request], httpx.Response], **overrides) -> RerankClient:
        options = {"api_key": "key", "sleep": fake_clock.sleep, "clock": fake_clock, **overrides}
        client = RerankClient(
            "https://inference.example", model=MODEL, transport=httpx.MockTransport(handler), **options
        )
        clients.append(client)
        return client

    return make
