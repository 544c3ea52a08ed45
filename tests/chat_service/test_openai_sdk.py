"""A client nobody here wrote: the official ``openai`` SDK, pointed at the chat stand-in the way Heroku's docs show.

Heroku's OpenAI-compatibility guide sets ``base_url=INFERENCE_URL + "/v1/"`` and the key as the API key.
"""

from __future__ import annotations

import openai
import pytest

from pipeline.answer.client import HerokuChatModel
from pipeline.answer.protocol import GenerationSettings
from tests.answer.passages import ANSWERED, messages
from tests.chat_stand_in import API_KEY, MODEL


@pytest.fixture
def sdk(chat_service):
    with openai.OpenAI(base_url=chat_service.url + "/v1/", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_the_sdk_gets_a_well_formed_completion_with_the_text_our_client_gets(sdk, chat_service):
    created = sdk.chat.completions.create(
        model=MODEL, messages=messages(ANSWERED), max_completion_tokens=300, temperature=0
    )
    with HerokuChatModel(chat_service.url, API_KEY, MODEL) as ours:
        completion = ours.complete(messages(ANSWERED), GenerationSettings(300, 0.0))

    assert created.object == "chat.completion" and created.model == "extractive-answerer"
    [choice] = created.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == completion.text and completion.text.endswith("[1]")
    assert created.usage is not None
    assert (created.usage.prompt_tokens, created.usage.completion_tokens) == (
        completion.prompt_tokens,
        completion.completion_tokens,
    )
    assert created.usage.total_tokens == created.usage.prompt_tokens + created.usage.completion_tokens
    by_sdk, by_us = chat_service.requests
    assert by_sdk.messages == by_us.messages
    assert (by_sdk.max_completion_tokens, by_sdk.temperature) == (by_us.max_completion_tokens, by_us.temperature)


def test_the_sdk_can_send_max_tokens_as_herokus_examples_do(sdk, chat_service):
    created = sdk.chat.completions.create(model=MODEL, messages=messages(ANSWERED), max_tokens=3)

    assert created.choices[0].finish_reason == "length" and created.usage.completion_tokens == 3
    assert chat_service.requests[0].max_completion_tokens == 3


def test_the_sdk_reads_the_stand_ins_errors(sdk, chat_service):
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a joke"}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-4o", messages=messages(ANSWERED))
    stranger = openai.OpenAI(base_url=chat_service.url + "/v1/", api_key="inf-wrong-key", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model=MODEL, messages=messages(ANSWERED))
    chat_service.faults.add("429")
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model=MODEL, messages=messages(ANSWERED))

    assert [sent.status for sent in chat_service.requests] == [400, 404, 401, 429]
