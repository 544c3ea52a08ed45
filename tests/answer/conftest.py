"""Fixtures: the local chat stand-in and chat clients that sleep on a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipeline.answer.client import HerokuChatModel
from pipeline.local import LocalChatService
from tests.chat_stand_in import API_KEY, MODEL, chat_service_fixture, shared_chat_service_fixture  # noqa: F401
from tests.clock import FakeClock, clients_on_clock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(chat_service: LocalChatService, fake_clock: FakeClock) -> Iterator[Callable[..., HerokuChatModel]]:
    """Clients of ``chat_service`` that sleep on ``fake_clock`` (waits are recorded, not waited); closed after."""
    # Limits high enough that pacing adds nothing unless a test sets its own.
    yield from clients_on_clock(
        HerokuChatModel,
        fake_clock,
        url=chat_service.url,
        api_key=API_KEY,
        model_id=MODEL,
        requests_per_minute=60_000,
        tokens_per_minute=100_000_000,
    )
