"""Chat completions through Heroku Inference ``POST {INFERENCE_URL}/v1/chat/completions`` (or a server that speaks it).

A thin layer over the inference core (:mod:`pipeline.inference`), which paces, retries and
redacts: this module builds the OpenAI-compatible body (``model``, ``messages``,
``max_completion_tokens``, ``temperature``), estimates what a request counts against the model's
tokens per minute, checks the answer (``choices[0].message.content`` and ``usage``) and keeps
the client's call statistics (:class:`ChatStats`).

A 401, 403 or 404 is a configuration error raised at once, naming ``INFERENCE_KEY`` or
``INFERENCE_MODEL_ID``; a 400 that names a generation setting every request shares is one too
(:class:`~pipeline.inference.InferenceSettingRejected`); any other 400 fails only its conversation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Unpack

import httpx

from pipeline.answer.contract import CHAT_COMPLETIONS_PATH, KNOWN_MODELS, requests_per_minute_for, tokens_per_minute_for
from pipeline.answer.protocol import Completion, GenerationSettings
from pipeline.inference import (
    CallTally,
    ClientOptions,
    EndpointClient,
    EndpointContract,
    InferenceClient,
    InferenceError,
    InferenceProtocolError,
)
from pipeline.tokens import count_tokens

CHAT = EndpointContract(
    name="chat",
    path=CHAT_COMPLETIONS_PATH,
    url_setting="INFERENCE_URL",
    key_setting="INFERENCE_KEY",
    model_setting="INFERENCE_MODEL_ID",
    known_models=KNOWN_MODELS,
)
# The prompt is estimated with cl100k (pipeline.tokens); Claude's tokenizer counts more for the same
# text. The headroom keeps the estimate above the server's count, and it only matters while the
# request is in flight: its answer's usage replaces the estimate in the pacing ledger.
PROMPT_TOKEN_HEADROOM = 1.3
# What the chat format adds per message (role, delimiters), in OpenAI's own accounting.
MESSAGE_OVERHEAD_TOKENS = 4
# A 400 naming one of these rejects what every request shares, not one conversation.
SHARED_SETTINGS = ("max_completion_tokens", "max_tokens", "temperature")


@dataclass
class ChatStats:
    """What the client has spent since it was built, across every call and thread.

    ``calls`` are :meth:`HerokuChatModel.complete` calls, ``requests`` the HTTP requests they
    took (retries included); latencies span whole successful calls, pacing waits and retries included.
    """

    calls: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_seconds: list[float] = field(default_factory=list)

    @property
    def latency_p50_seconds(self) -> float | None:
        return _nearest_rank(sorted(self.latencies_seconds), 0.50)

    @property
    def latency_p95_seconds(self) -> float | None:
        return _nearest_rank(sorted(self.latencies_seconds), 0.95)


@dataclass(frozen=True)
class _Answer:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class HerokuChatModel(EndpointClient):
    """The :class:`~pipeline.answer.protocol.ChatModel` of a ``/v1/chat/completions`` server; shareable between threads.

    ``model`` is ``<model id>@<host[:port]>``: the same model ID served elsewhere (the local
    stand-in, another region) is another model as far as cached answers go.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        model_id: str,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._inference = InferenceClient(
            CHAT,
            url,
            api_key,
            model_id,
            requests_per_minute=requests_per_minute or requests_per_minute_for(model_id),
            tokens_per_minute=tokens_per_minute or tokens_per_minute_for(model_id),
            rejection=self._rejection,
            **options,
        )
        self.base_url = self._inference.base_url
        self.model_id = model_id
        self._model = f"{model_id}@{httpx.URL(self.base_url).netloc.decode('ascii')}"
        self._clock = self._inference.clock
        self._stats = ChatStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HerokuChatModel(base_url={self.base_url!r}, model={self.model_id!r})"

    @property
    def model(self) -> str:
        return self._model

    @property
    def stats(self) -> ChatStats:
        """A snapshot of what the client has spent so far."""
        with self._lock:
            return replace(self._stats, latencies_seconds=list(self._stats.latencies_seconds))

    def complete(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> Completion:
        """One completion of ``messages``, paced, retried and checked; raises an
        :class:`~pipeline.inference.InferenceError` when the server does not give one."""
        if not messages:
            raise ValueError("messages must not be empty")
        body = {
            "model": self.model_id,
            "messages": [{"role": message["role"], "content": message["content"]} for message in messages],
            "max_completion_tokens": settings.max_completion_tokens,
            "temperature": settings.temperature,
        }
        inference = self._inference
        estimate = prompt_token_estimate(messages) + settings.max_completion_tokens
        budget = inference.limiter.token_budget
        if budget is not None:
            # One request never waits for more than a whole window's budget, however it is estimated.
            estimate = min(estimate, int(budget))
        tally = CallTally()
        started = self._clock()
        try:
            answer = inference.post(
                body,
                lambda payload: self._parse(payload, inference.invalid_response),
                tally=tally,
                tokens=estimate,
                counted=_counted_tokens,
            )
        except InferenceError as error:
            tally.charge(error)
            self._record(tally, None, None)
            raise
        self._record(tally, answer, self._clock() - started)
        return Completion(
            answer.text, answer.model, answer.prompt_tokens, answer.completion_tokens, answer.finish_reason
        )

    # --- internals --------------------------------------------------------------------------

    def _parse(self, payload: Any, broken: Callable[[str], InferenceProtocolError]) -> _Answer:
        """The answer's text and usage, checked against the contract; ``broken(reason)`` when it breaks it."""
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise broken("no 'choices' list")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise broken(f"no text in choices[0].message.content: {self._inference.quoted(choice)}")
        usage = payload.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if not all(type(count) is int and count >= 0 for count in (prompt, completion)):
            raise broken(f"no whole usage.prompt_tokens and usage.completion_tokens: {self._inference.quoted(usage)}")
        assert isinstance(prompt, int) and isinstance(completion, int)
        model = payload.get("model")
        finish_reason = choice.get("finish_reason")
        return _Answer(
            text=content,
            model=model if isinstance(model, str) and model else self.model_id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            finish_reason=finish_reason if isinstance(finish_reason, str) else "",
        )

    def _record(self, tally: CallTally, answer: _Answer | None, latency: float | None) -> None:
        with self._lock:
            stats = self._stats
            stats.calls += 1
            stats.requests += tally.requests
            stats.retries += tally.retries
            stats.rate_limited += tally.rate_limited
            if answer is None or latency is None:
                stats.failed += 1
                return
            stats.prompt_tokens += answer.prompt_tokens
            stats.completion_tokens += answer.completion_tokens
            stats.latencies_seconds.append(latency)

    def _rejection(self, status: int, detail: str, body: dict[str, Any]) -> InferenceError | None:
        """A 400 that names a generation setting fails every request alike; None leaves the rest to the core."""
        words = detail.lower()
        setting = next((name for name in SHARED_SETTINGS if name in words), None) if status == 400 else None
        if setting is None:
            return None
        return CHAT.errors.setting_rejected(
            f"{self.base_url} rejected {setting}={body.get(setting, body['max_completion_tokens'])!r} "
            f"(HTTP 400): {detail}",
            setting=setting,
            status_code=status,
        )


def prompt_token_estimate(messages: Sequence[Mapping[str, str]]) -> int:
    """What the messages will count as the prompt, estimated from above (see :data:`PROMPT_TOKEN_HEADROOM`)."""
    counted = sum(count_tokens(message.get("content", "")) + MESSAGE_OVERHEAD_TOKENS for message in messages)
    return math.ceil(counted * PROMPT_TOKEN_HEADROOM)


def _counted_tokens(answer: _Answer) -> int:
    return answer.prompt_tokens + answer.completion_tokens


def _nearest_rank(sorted_values: Sequence[float], fraction: float) -> float | None:
    return sorted_values[max(1, math.ceil(len(sorted_values) * fraction)) - 1] if sorted_values else None
