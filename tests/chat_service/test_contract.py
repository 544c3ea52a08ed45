"""The chat stand-in speaks the OpenAI-compatible subset of Heroku's /v1/chat/completions, and says what it is."""

from __future__ import annotations

import pytest

from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.protocol import GenerationSettings
from pipeline.local.token_count import count_tokens
from tests.answer.passages import ANSWERED, NOT_COVERED, messages
from tests.chat_service.conftest import body
from tests.chat_stand_in import chat_stand_in


def test_a_completion_has_the_openai_shape_and_the_services_token_counts(post, chat_service):
    response = post(body(temperature=0))
    answer = response.json()

    assert response.status_code == 200
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert isinstance(answer["created"], int)
    [choice] = answer["choices"]
    expected = ExtractiveChatModel().complete(messages(ANSWERED), GenerationSettings(300, 0.0))
    assert choice == {"index": 0, "message": {"role": "assistant", "content": expected.text}, "finish_reason": "stop"}
    prompt = count_tokens([message["content"] for message in messages(ANSWERED)])
    completion = count_tokens([expected.text])
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    [logged] = chat_service.requests
    assert (logged.max_completion_tokens, logged.temperature, logged.answer) == (300, 0.0, expected.text)


def test_it_says_it_is_a_stand_in_and_never_claims_the_requested_model(post):
    response = post(body())

    assert response.json()["model"] == "extractive-answerer"
    # The header names the answerer with its rules version.
    assert response.headers["x-local-stand-in"] == (
        f"local chat stand-in, not Heroku Inference; answers: {ExtractiveChatModel().model}"
    )
    assert ExtractiveChatModel().model.startswith("extractive-answerer@")


def test_max_tokens_is_taken_as_max_completion_tokens(post, chat_service):
    short = post({**{k: v for k, v in body().items() if k != "max_completion_tokens"}, "max_tokens": 4})

    assert short.status_code == 200
    assert short.json()["usage"]["completion_tokens"] == 4
    assert short.json()["choices"][0]["finish_reason"] == "length"
    assert chat_service.requests[-1].max_completion_tokens == 4


def test_an_abstention_is_an_ordinary_completion(post):
    text = post(body(messages=messages(NOT_COVERED))).json()["choices"][0]["message"]["content"]
    assert text.startswith("NOT IN THE DOCS:")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string"),
        ({"max_completion_tokens": 0}, "max_completion_tokens must be a positive integer"),
        ({"max_tokens": 10}, "not both"),
        ({"temperature": 3}, "temperature must be within [0, 2]"),
        ({"temperature": "warm"}, "temperature must be a number"),
        ({"logprobs": True}, "unsupported fields ['logprobs']"),
        ({"stream": True}, "answers whole and without tools: stream"),
        ({"messages": [{"role": "user", "content": "Tell me a joke"}]}, "no <question> block"),
    ],
)
def test_a_bad_body_is_a_400_that_says_what_is_wrong(post, change, message):
    response = post(body(**change))

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request" and message in response.json()["message"]


def test_missing_model_or_messages_or_a_body_that_is_not_json(post, chat_service):
    without_messages = {k: v for k, v in body().items() if k != "messages"}
    assert "missing required field: messages" in post(without_messages).json()["message"]
    assert "missing required field: model" in post(body(model=None)).json()["message"]
    assert post(content=b"{not json", service=chat_service).status_code == 400


def test_the_key_and_the_model_are_checked(post):
    assert post(body(), headers={"Authorization": "Bearer inf-wrong-key-0000"}).status_code == 401
    assert post(body(), headers={"Authorization": ""}).status_code == 401
    unknown = post(body(model="gpt-4o"))
    assert unknown.status_code == 404 and "claude-4-5-haiku" in unknown.json()["message"]


def test_a_model_the_key_is_not_attached_to_is_a_403(post):
    with chat_stand_in(allowed_models=["claude-4-sonnet"]) as service:
        assert post(body(), service=service).status_code == 403


def test_tokens_per_minute_count_the_prompt_and_the_completion_it_may_write(post):
    prompt = count_tokens([message["content"] for message in messages(ANSWERED)])
    with chat_stand_in(tokens_per_minute=prompt + 300 + 10, requests_per_minute=5) as service:
        first = post(body(), service=service)
        limited = post(body(), service=service)

    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == str(prompt + 310)
    assert first.headers["x-ratelimit-remaining-tokens"] == "10"
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert limited.status_code == 429 and "tokens per minute" in limited.json()["message"]
    assert 58 <= int(limited.headers["retry-after"]) <= 60


def test_faults_work_as_in_the_other_stand_ins(post, chat_service):
    assert post(body(), headers={"X-Fault": "500"}).status_code == 500
    malformed = post(body(), headers={"X-Fault": "malformed"})
    assert malformed.status_code == 200 and malformed.text.endswith('"content": "')
    chat_service.faults.add("429")
    assert post(body()).status_code == 429
    assert [logged.fault for logged in chat_service.requests] == ["500", "malformed", "429"]
