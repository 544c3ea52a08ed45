"""A small deterministic chat model for the answering tests: a real ``ChatModel``, reading its prompt back.

It answers with the first sentence of the first passage that shares a word with the question,
cited ``[n]``, or abstains; it can fail chosen questions the way the chat endpoint's client does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence

from pipeline.answer.prompt import NOT_IN_THE_DOCS, read_prompt_data
from pipeline.answer.protocol import Completion, GenerationSettings
from pipeline.inference import InferenceServerError, InferenceUnauthorized

_WORD = re.compile(r"[a-z0-9_]{4,}")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class CitingChat:
    """Answers from the passages of the prompt; ``failing`` questions raise a server error, and every
    question raises a rejected key while ``key_rejected`` is set. ``requests`` keeps each prompt sent."""

    def __init__(self, *, failing: Sequence[str] = (), cite: str = "[{n}]") -> None:
        self.failing = set(failing)
        self.key_rejected = False
        self.cite = cite
        self.requests: list[list[dict[str, str]]] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return "citing-test-model@127.0.0.1"

    def complete(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> Completion:
        with self._lock:
            self.requests.append([dict(message) for message in messages])
        data = read_prompt_data(messages)
        assert data is not None, "the prompt is not in build_messages' shape"
        if self.key_rejected:
            raise InferenceUnauthorized("the chat endpoint rejected the key (HTTP 401)", status_code=401)
        if data.question in self.failing:
            raise InferenceServerError("the chat endpoint answered HTTP 500 on every attempt", status_code=500)
        question = _words(data.question)
        text = next(
            (
                f"{passage.split('.')[0].strip()}. {self.cite.format(n=number)}"
                for number, _title, _url, passage in data.passages
                if question & _words(passage)
            ),
            f"{NOT_IN_THE_DOCS} the passages do not mention {data.question!r}.",
        )
        prompt_tokens = sum(len(message["content"].split()) for message in messages)
        return Completion(text, "citing-test-model", prompt_tokens, len(text.split()), "stop")
