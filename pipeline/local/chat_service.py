"""A local stand-in for Heroku Inference ``/v1/chat/completions``: the offline chat path and its test double.

It speaks the OpenAI-compatible subset Heroku serves (:mod:`pipeline.answer.contract`): bearer
auth, ``model``, ``messages``, ``max_completion_tokens`` (or the older ``max_tokens``, which
Heroku's own examples send), ``temperature``, ``usage``, the 400/401/403/404/429 cases and the
``x-ratelimit-*`` headers, limited on requests and tokens per minute. Tokens are counted here
with tiktoken's cl100k encoding (:mod:`pipeline.local.token_count`), not taken from the client; a
request is admitted on its prompt plus the ``max_completion_tokens`` it may write, as the length of
its answer is not known yet.

It says what it is: the answers come from the answerer it is given (the CLI gives it the
pipeline's extractive answerer), not from Claude, whatever model a request names. The ``model``
of every answer is the answerer's name, and every response carries an ``X-Local-Stand-In``
header. A conversation the answerer cannot read (it raises ValueError) is a 400.

Faults and the request log work as in the other stand-ins (:mod:`pipeline.local.service`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.answer.contract import (
    BODY_FIELDS,
    CHAT_COMPLETIONS_PATH,
    DEFAULT_MAX_COMPLETION_TOKENS,
    DEFAULT_TEMPERATURE,
    MAX_TEMPERATURE,
    RATE_WINDOW_SECONDS,
    ROLES,
)
from pipeline.answer.protocol import Completion, GenerationSettings
from pipeline.local.config import ChatServiceConfig
from pipeline.local.rate_limits import REQUESTS, TOKENS
from pipeline.local.responses import Rejection
from pipeline.local.service import STAND_IN_HEADER, Logged, Seen, StandInService
from pipeline.local.token_count import count_tokens

# What a "malformed" fault sends: a 200 whose JSON body is cut off.
MALFORMED_BODY = b'{"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
# Fields Heroku accepts that this stand-in cannot honour: it answers whole, in text, without tools.
UNSUPPORTED_FIELDS = ("tools", "tool_choice")


class Answerer(Protocol):
    """Completes a conversation; raises ValueError for one it cannot read."""

    @property
    def model(self) -> str: ...

    def complete(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> Completion: ...


@dataclass(frozen=True)
class LoggedChatRequest(Logged):
    """One ``/v1/chat/completions`` request as the service saw it; tokens as the service counted them."""

    messages: tuple[tuple[str, str], ...] | None
    max_completion_tokens: int | None
    temperature: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    answer: str | None


@dataclass
class _SeenChat(Seen):
    messages: tuple[tuple[str, str], ...] | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    answer: str | None = None


class ChatService(StandInService[_SeenChat, LoggedChatRequest]):
    """The ``/v1/chat/completions`` app (:attr:`app`) plus its state: request log, fault plan, rate windows."""

    def __init__(self, config: ChatServiceConfig, answerer: Answerer) -> None:
        super().__init__(
            config,
            name="chat",
            path=CHAT_COMPLETIONS_PATH,
            malformed_body=MALFORMED_BODY,
            limits={REQUESTS: config.requests_per_minute, TOKENS: config.tokens_per_minute},
            window_seconds=RATE_WINDOW_SECONDS,
            quota_headers=True,
            identity_headers={STAND_IN_HEADER: f"local chat stand-in, not Heroku Inference; answers: {answerer.model}"},
        )
        self.answerer = answerer

    @property
    def description(self) -> str:
        return (
            f"local chat stand-in ({CHAT_COMPLETIONS_PATH}), not Heroku Inference: answers from {self.answerer.model}, "
            "whatever model a request names"
        )

    def warm(self) -> None:
        count_tokens(["warm"])

    def _new_seen(self) -> _SeenChat:
        return _SeenChat()

    def _logged(self, seen: _SeenChat, outcome: Logged) -> LoggedChatRequest:
        return LoggedChatRequest(
            **vars(outcome),
            messages=seen.messages,
            max_completion_tokens=seen.max_completion_tokens,
            temperature=seen.temperature,
            prompt_tokens=seen.prompt_tokens,
            completion_tokens=seen.completion_tokens,
            answer=seen.answer,
        )

    def _details(self, logged: LoggedChatRequest) -> str:
        messages = None if logged.messages is None else len(logged.messages)
        return (
            f"messages={messages} max_completion_tokens={logged.max_completion_tokens} "
            f"prompt_tokens={logged.prompt_tokens} completion_tokens={logged.completion_tokens}"
        )

    async def _respond(self, request: Request, seen: _SeenChat) -> Response:
        model, body = await self._model_of(request, seen)
        messages, seen.max_completion_tokens, seen.temperature = _validated_fields(body)
        seen.messages = tuple((message["role"], message["content"]) for message in messages)
        contents = [message["content"] for message in messages]
        seen.prompt_tokens = prompt_tokens = await run_in_threadpool(count_tokens, contents)
        self._admit(seen, model, {REQUESTS: 1, TOKENS: prompt_tokens + seen.max_completion_tokens})
        faulty = await self._faulty_response(request, seen, contents)
        if faulty is not None:
            return faulty
        settings = GenerationSettings(seen.max_completion_tokens, seen.temperature)
        try:
            completion = await run_in_threadpool(self.answerer.complete, messages, settings)
        except ValueError as error:
            raise Rejection(400, "bad_request", str(error)) from None
        seen.answer = completion.text
        seen.completion_tokens = completion_tokens = await run_in_threadpool(count_tokens, [completion.text])
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": completion.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


def _validated_fields(body: dict[str, Any]) -> tuple[list[dict[str, str]], int, float]:
    """messages, max_completion_tokens and temperature (the contract's defaults for those left out), or a 400."""
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise Rejection(
            400, "bad_request", f"unsupported fields {unknown}; supported: {', '.join(sorted(BODY_FIELDS))}"
        )
    refused = [field for field in UNSUPPORTED_FIELDS if body.get(field) is not None]
    if body.get("stream"):
        refused.append("stream")
    if refused:
        raise Rejection(400, "bad_request", f"this stand-in answers whole and without tools: {', '.join(refused)}")
    messages = _messages(body.get("messages"))
    if "max_completion_tokens" in body and "max_tokens" in body:
        raise Rejection(400, "bad_request", "give max_completion_tokens or max_tokens (its older name), not both")
    limit = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_COMPLETION_TOKENS))
    if type(limit) is not int or limit < 1:
        raise Rejection(400, "bad_request", f"max_completion_tokens must be a positive integer, got {limit!r}")
    temperature = body.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise Rejection(400, "bad_request", f"temperature must be a number, got {temperature!r}")
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise Rejection(400, "bad_request", f"temperature must be within [0, {MAX_TEMPERATURE:g}], got {temperature}")
    return messages, limit, float(temperature)


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise Rejection(400, "bad_request", "missing required field: messages")
    if not isinstance(value, list) or not value:
        raise Rejection(400, "bad_request", "messages must be a non-empty list")
    for index, message in enumerate(value):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise Rejection(400, "bad_request", f"messages[{index}].role must be one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise Rejection(400, "bad_request", f"messages[{index}].content must be a string")
    return [{"role": message["role"], "content": message["content"]} for message in value]
