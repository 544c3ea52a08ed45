"""The local chat stand-in on 127.0.0.1 (ephemeral port), answering with the extractive answerer.

The fixtures are imported by the conftest of each test package that talks to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.local import ChatServiceConfig, LocalChatService

# Distinctive so that a leak is unmistakable when logs and messages are searched for it.
API_KEY = "inf-chat-3e8a1c7d5b9f2e4a"
MODEL = "claude-4-5-haiku"


@contextmanager
def chat_stand_in(**overrides) -> Iterator[LocalChatService]:
    """A running stand-in with ChatServiceConfig overrides (test mode on by default)."""
    config = ChatServiceConfig(**{"api_key": API_KEY, "test_mode": True, **overrides})
    with LocalChatService(config, answerer=ExtractiveChatModel(), warm=True) as service:
        yield service


@pytest.fixture(scope="session", name="shared_chat_service")
def shared_chat_service_fixture() -> Iterator[LocalChatService]:
    with chat_stand_in() as service:
        yield service


@pytest.fixture(name="chat_service")
def chat_service_fixture(shared_chat_service: LocalChatService) -> LocalChatService:
    """The default stand-in (test mode, no limits), with an empty request log and no queued faults."""
    shared_chat_service.service.clear()
    return shared_chat_service
