"""Fixtures: the local chat stand-in, and a POST to it with the key."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeline.local import LocalChatService
from tests.answer.passages import ANSWERED, messages
from tests.chat_stand_in import API_KEY, MODEL, chat_service_fixture, shared_chat_service_fixture  # noqa: F401


@pytest.fixture
def post(chat_service: LocalChatService) -> Iterator[Callable[..., httpx.Response]]:
    """POST a JSON body to /v1/chat/completions with the key; ``service`` (default: the shared one) and
    ``headers`` may be given."""
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}) as http:

        def send(request_body=None, *, service=None, **options) -> httpx.Response:
            return http.post(f"{(service or chat_service).url}/v1/chat/completions", json=request_body, **options)

        yield send


def body(**overrides) -> dict:
    return {"model": MODEL, "messages": messages(ANSWERED), "max_completion_tokens": 300, **overrides}
