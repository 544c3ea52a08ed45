"""HerokuChatModel against the chat stand-in on loopback: completions, retries, pacing, errors, the key kept out."""

from __future__ import annotations

import logging

import httpx
import pytest

from pipeline.answer.client import HerokuChatModel, prompt_token_estimate
from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.protocol import GenerationSettings
from pipeline.inference import (
    InferenceBadRequest,
    InferenceModelNotFound,
    InferenceProtocolError,
    InferenceRateLimited,
    InferenceSettingRejected,
    InferenceUnauthorized,
)
from tests.answer.passages import ANSWERED, NOT_COVERED, messages
from tests.chat_stand_in import API_KEY, MODEL, chat_stand_in

SETTINGS = GenerationSettings(max_completion_tokens=300, temperature=0.0)


def test_a_completion_is_the_stand_ins_answer_with_its_usage(make_client, chat_service, fake_clock):
    client = make_client()
    completion = client.complete(messages(ANSWERED), SETTINGS)

    expected = ExtractiveChatModel().complete(messages(ANSWERED), SETTINGS)
    assert (completion.text, completion.model, completion.finish_reason) == (
        expected.text,
        "extractive-answerer",
        "stop",
    )
    [logged] = chat_service.requests
    assert (completion.prompt_tokens, completion.completion_tokens) == (logged.prompt_tokens, logged.completion_tokens)
    assert logged.model == MODEL and logged.messages == tuple((m["role"], m["content"]) for m in messages(ANSWERED))
    assert (logged.max_completion_tokens, logged.temperature) == (300, 0.0)
    assert client.model == f"{MODEL}@127.0.0.1:{chat_service.port}"
    stats = client.stats
    assert (stats.calls, stats.requests, stats.retries, stats.rate_limited, stats.failed) == (1, 1, 0, 0, 0)
    assert stats.prompt_tokens == completion.prompt_tokens and stats.latency_p50_seconds == stats.latency_p95_seconds
    assert fake_clock.sleeps == []


def test_an_abstention_comes_back_as_text(make_client):
    assert make_client().complete(messages(NOT_COVERED), SETTINGS).text.startswith("NOT IN THE DOCS:")


def test_a_429_is_retried_after_its_retry_after(make_client, chat_service, fake_clock):
    chat_service.faults.add("429")
    client = make_client()
    completion = client.complete(messages(ANSWERED), SETTINGS)

    assert completion.text.endswith("[1]")
    assert [logged.status for logged in chat_service.requests] == [429, 200]
    # Retry-After: 1 is honoured exactly, and the limiter, pushed back by the same second, adds nothing.
    assert fake_clock.sleeps == [1.0]
    stats = client.stats
    assert (stats.calls, stats.requests, stats.retries, stats.rate_limited) == (1, 2, 1, 1)


def test_429_on_every_attempt_raises_rate_limited_and_counts_a_failed_call(make_client, chat_service):
    chat_service.faults.add("429", times=None)
    client = make_client(max_attempts=3)
    with pytest.raises(InferenceRateLimited) as caught:
        client.complete(messages(ANSWERED), SETTINGS)

    assert caught.value.requests == 3 and "gave up after 3 attempts" in str(caught.value)
    assert (client.stats.failed, client.stats.rate_limited, client.stats.latency_p50_seconds) == (1, 3, None)


def test_requests_are_paced_on_the_tokens_the_server_counted(make_client, fake_clock):
    # 58,800 tokens paced a minute (98% of 60,000): each request keeps the next one its count's share away.
    client = make_client(requests_per_minute=1_000, tokens_per_minute=60_000)
    first = client.complete(messages(ANSWERED), SETTINGS)
    client.complete(messages(ANSWERED), SETTINGS)

    counted = first.prompt_tokens + first.completion_tokens
    [wait] = fake_clock.sleeps
    assert wait == pytest.approx(counted * 60 / 58_800)


def test_the_estimate_covers_the_prompt_and_the_completion_it_may_write(make_client, chat_service):
    sent = messages(ANSWERED)
    completion = make_client().complete(sent, SETTINGS)

    # Above what the server counts for the prompt (it counts with cl100k too, without the headroom).
    assert prompt_token_estimate(sent) > completion.prompt_tokens


def test_a_spent_quota_in_the_headers_holds_the_next_call(make_client, fake_clock):
    with chat_stand_in(requests_per_minute=1) as service:
        client = make_client(url=service.url, max_total_seconds=30)
        first = client.complete(messages(ANSWERED), SETTINGS)
        with pytest.raises(InferenceRateLimited) as held:
            client.complete(messages(ANSWERED), SETTINGS)

    # The 200 said x-ratelimit-remaining-requests: 0 until the window resets in 60 s, past the 30 s budget:
    # the next call is not sent (no 429 collected) and waits for nothing.
    assert first.text and [logged.status for logged in service.requests] == [200]
    assert str(held.value).startswith("not sent:") and held.value.requests == 0
    assert fake_clock.sleeps == []
    assert (client.stats.calls, client.stats.failed) == (2, 1)


def test_a_wrong_key_fails_at_once_naming_inference_key(make_client, chat_service, fake_clock):
    with pytest.raises(InferenceUnauthorized) as caught:
        make_client(api_key="inf-wrong-9d9d9d9d9d").complete(messages(ANSWERED), SETTINGS)

    assert "INFERENCE_KEY was rejected" in str(caught.value) and not caught.value.retryable
    assert len(chat_service.requests) == 1 and fake_clock.sleeps == []


def test_an_unknown_model_fails_at_once_naming_inference_model_id(make_client, chat_service):
    with pytest.raises(InferenceModelNotFound) as caught:
        make_client(model_id="claude-9").complete(messages(ANSWERED), SETTINGS)

    assert "INFERENCE_MODEL_ID" in str(caught.value) and "claude-4-5-haiku" in str(caught.value)
    assert len(chat_service.requests) == 1


def test_a_rejected_setting_fails_every_request_and_a_rejected_conversation_only_its_own(make_client, chat_service):
    client = make_client()
    with pytest.raises(InferenceSettingRejected) as setting:
        client.complete(messages(ANSWERED), GenerationSettings(temperature=5.0))
    with pytest.raises(InferenceBadRequest) as conversation:
        client.complete([{"role": "user", "content": "Tell me a joke"}], SETTINGS)

    assert setting.value.setting == "temperature" and "temperature=5.0" in str(setting.value)
    assert not isinstance(conversation.value, InferenceSettingRejected)
    assert "no <question> block" in str(conversation.value)
    assert [logged.status for logged in chat_service.requests] == [400, 400]  # neither retried


def test_a_cut_off_body_is_retried(make_client, chat_service):
    chat_service.faults.add("malformed")
    assert make_client().complete(messages(ANSWERED), SETTINGS).text.endswith("[1]")
    assert [logged.fault for logged in chat_service.requests] == ["malformed", None]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"choices": []}, "no 'choices' list"),
        ({"choices": [{"message": {"role": "assistant", "content": None}}]}, "no text in choices[0].message.content"),
        ({"choices": [{"message": {"role": "assistant", "content": "Hi [1]"}}]}, "no whole usage.prompt_tokens"),
        (
            {
                "choices": [{"message": {"content": "Hi [1]"}}],
                "usage": {"prompt_tokens": -1, "completion_tokens": 2},
            },
            "no whole usage.prompt_tokens",
        ),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_protocol_error_not_retried(fake_clock, answer, reason):
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=answer)

    with (
        HerokuChatModel(
            "https://inference.example", "key", MODEL, transport=httpx.MockTransport(server), sleep=fake_clock.sleep
        ) as client,
        pytest.raises(InferenceProtocolError) as caught,
    ):
        client.complete(messages(ANSWERED), SETTINGS)

    assert reason in str(caught.value) and caught.value.code == "invalid_response" and len(sent) == 1


def test_the_key_never_shows_in_errors_reprs_or_logs(make_client, chat_service, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "inf-wrong-7a7a7a7a7a7a"
    chat_service.faults.add("500", times=None)
    texts = []
    for client in (make_client(api_key=wrong_key), make_client(model_id="claude-9"), make_client(max_attempts=2)):
        with pytest.raises(Exception) as caught:
            client.complete(messages(ANSWERED), SETTINGS)
        texts += [str(caught.value), repr(caught.value), repr(client), repr(vars(client)), repr(client.stats)]
    texts += [caplog.text, *(repr(logged) for logged in chat_service.requests)]

    assert any("retry 1 of 1" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert API_KEY not in text and wrong_key not in text


def test_a_key_echoed_by_the_server_is_redacted():
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": f"bad header {request.headers['authorization']}"})

    with (
        HerokuChatModel("https://inference.example", "secret-key-123", MODEL, transport=httpx.MockTransport(echo)) as c,
        pytest.raises(InferenceBadRequest) as caught,
    ):
        c.complete(messages(ANSWERED), SETTINGS)
    assert "bad header Bearer [REDACTED]" in str(caught.value)


def test_empty_settings_are_named_before_anything_is_sent():
    with pytest.raises(ValueError, match="INFERENCE_URL is empty"):
        HerokuChatModel("", API_KEY, MODEL)
    with pytest.raises(ValueError, match="INFERENCE_KEY is empty"):
        HerokuChatModel("http://127.0.0.1:1", "", MODEL)
    with pytest.raises(ValueError, match="INFERENCE_MODEL_ID is empty"):
        HerokuChatModel("http://127.0.0.1:1", API_KEY, "")
