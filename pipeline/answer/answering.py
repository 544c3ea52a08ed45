"""Every published context set answered through a chat model: cached, isolated per query, never invented.

One answer per context set, in the context sets' order:

- a set with no passages is an abstention without a call: there is nothing to answer from;
- otherwise the prompt (:func:`~pipeline.answer.prompt.build_messages`, every configured secret
  redacted) goes to the chat model, unless the durable cache holds the completion for the same
  chat model, prompt version, generation settings and context-set content, which spends 0 tokens;
- a query whose completion fails (after the client's own retries), or whose conversation the chat
  model cannot read (a ValueError), is recorded as failed with the error's code and no text:
  nothing is invented in its place, and failures are never cached, so the next run asks only for
  them. A configuration error (rejected key, unknown model) would fail
  every query the same way: it stops the queries not yet sent and is raised.

An answer carries the content hash of the context set it was computed from, which is how the
store publishes it only beside that very set (:mod:`pipeline.store.answers`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from pipeline.answer.citations import parse_answer
from pipeline.answer.prompt import NOT_IN_THE_DOCS, PROMPT_VERSION, build_messages, numbered_passages
from pipeline.answer.protocol import ChatModel, Completion, GenerationSettings
from pipeline.inference import InferenceConfigurationError, InferenceError, ResultCache, text_hash
from pipeline.store.records import Answer, ContextSet
from pipeline.store.state import StateStore

log = logging.getLogger(__name__)

NO_PASSAGES = f"{NOT_IN_THE_DOCS} no documentation passage was found for this question."
# The published error of a query whose conversation the chat model could not read.
UNREADABLE_CONVERSATION = "unreadable_conversation"


class StoreAnswerCache:
    """The answer cache kept in the state store (durable across dyno restarts)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def get(self, key: str) -> dict | None:
        return self._store.answers.cached_completion(key)

    def put(self, key: str, value: dict) -> None:
        self._store.answers.cache_completion(key, value)


def answer_cache_key(chat_model: str, settings: GenerationSettings, context_set_hash: str) -> str:
    """sha256 over the chat model and where it is served, the prompt version, the generation settings and
    the context set's content hash (which covers the question and every passage)."""
    return text_hash(json.dumps([chat_model, PROMPT_VERSION, settings.key(), context_set_hash], ensure_ascii=False))


@dataclass(frozen=True)
class AnswerOutcome:
    """One query's answer and how it was obtained: ``called`` when a completion was requested,
    ``latency_seconds`` for a completion that came back, ``detail`` a failure's message for the log."""

    answer: Answer
    called: bool = False
    latency_seconds: float | None = None
    detail: str | None = None


def _nearest_rank(sorted_values: Sequence[float], fraction: float) -> float | None:
    return sorted_values[max(1, math.ceil(len(sorted_values) * fraction)) - 1] if sorted_values else None


@dataclass(frozen=True)
class AnswerStats:
    """Totals over one answering run; tokens are those this run spent (cache hits spend none)."""

    queries: int
    answered: int
    not_answered: int
    failed: int
    cache_hits: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    latency_samples: int
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[AnswerOutcome]) -> AnswerStats:
        answers = [outcome.answer for outcome in outcomes]
        spent = [answer for answer in answers if not answer.cached]
        latencies = sorted(o.latency_seconds for o in outcomes if o.latency_seconds is not None)
        return cls(
            queries=len(answers),
            answered=sum(answer.answered for answer in answers),
            not_answered=sum(not answer.answered and not answer.failed for answer in answers),
            failed=sum(answer.failed for answer in answers),
            cache_hits=sum(answer.cached for answer in answers),
            calls=sum(outcome.called for outcome in outcomes),
            prompt_tokens=sum(answer.prompt_tokens for answer in spent),
            completion_tokens=sum(answer.completion_tokens for answer in spent),
            latency_samples=len(latencies),
            latency_p50_seconds=_nearest_rank(latencies, 0.50),
            latency_p95_seconds=_nearest_rank(latencies, 0.95),
        )


@dataclass(frozen=True)
class AnswerReport:
    outcomes: tuple[AnswerOutcome, ...]

    @property
    def answers(self) -> list[Answer]:
        return [outcome.answer for outcome in self.outcomes]

    @property
    def failed(self) -> list[AnswerOutcome]:
        return [outcome for outcome in self.outcomes if outcome.answer.failed]

    @property
    def stats(self) -> AnswerStats:
        return AnswerStats.from_outcomes(self.outcomes)


def _answer(context_set: ContextSet, content_hash: str, completion: Completion, *, cached: bool) -> Answer:
    parsed = parse_answer(completion.text, numbered_passages(context_set.passages))
    return Answer(
        query_id=context_set.query_id,
        query=context_set.query,
        answered=parsed.answered,
        answer=completion.text,
        citations=tuple(dataclasses.asdict(citation) for citation in parsed.citations),
        model=completion.model,
        prompt_version=PROMPT_VERSION,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        cached=cached,
        context_set_hash=content_hash,
    )


def _unanswered(
    context_set: ContextSet, content_hash: str, model: str, *, text: str | None, error: str | None
) -> Answer:
    return Answer(
        query_id=context_set.query_id,
        query=context_set.query,
        answered=False,
        answer=text,
        citations=(),
        model=model,
        prompt_version=PROMPT_VERSION,
        prompt_tokens=0,
        completion_tokens=0,
        cached=False,
        context_set_hash=content_hash,
        error=error,
    )


def _cached_completion(cache: ResultCache, key: str) -> Completion | None:
    value = cache.get(key)
    if value is None:
        return None
    try:
        return Completion(**value)
    except TypeError:
        log.warning("ignoring unreadable answer cache entry %s", key)
        return None


def answer_context_sets(
    context_sets: Sequence[ContextSet],
    chat: ChatModel,
    settings: GenerationSettings,
    *,
    cache: ResultCache,
    redact: Callable[[str], str],
    max_workers: int = 4,
) -> AnswerReport:
    """One answer per context set, in their order (see the module docstring)."""
    outcomes: list[AnswerOutcome | None] = [None] * len(context_sets)
    hashes = [context_set.content_hash() for context_set in context_sets]
    aborted = threading.Event()

    def complete(context_set: ContextSet) -> tuple[Completion, float] | None:
        # Workers check and set the flag themselves so an abort does not wait for the main thread.
        if aborted.is_set():
            return None
        messages = build_messages(context_set.query, numbered_passages(context_set.passages), redact)
        started = time.perf_counter()
        try:
            completion = chat.complete(messages, settings)
        except InferenceConfigurationError:
            aborted.set()
            raise
        return completion, time.perf_counter() - started

    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="answer")
    pending: dict[Future[tuple[Completion, float] | None], tuple[int, str]] = {}
    try:
        for position, (context_set, content_hash) in enumerate(zip(context_sets, hashes, strict=True)):
            if not context_set.passages:
                answer = _unanswered(context_set, content_hash, chat.model, text=NO_PASSAGES, error=None)
                outcomes[position] = AnswerOutcome(answer)
                continue
            key = answer_cache_key(chat.model, settings, content_hash)
            cached = _cached_completion(cache, key)
            if cached is not None:
                outcomes[position] = AnswerOutcome(_answer(context_set, content_hash, cached, cached=True))
                continue
            pending[pool.submit(complete, context_set)] = (position, key)
        for future in as_completed(pending):
            position, key = pending[future]
            context_set, content_hash = context_sets[position], hashes[position]
            try:
                result = future.result()
            except InferenceConfigurationError:
                raise
            except (InferenceError, ValueError) as error:
                # A ValueError is a chat model that cannot read the conversation (the extractive answerer's
                # NotACitedAnswerPrompt): that query fails, the others go on.
                code = error.code if isinstance(error, InferenceError) else UNREADABLE_CONVERSATION
                answer = _unanswered(context_set, content_hash, chat.model, text=None, error=code)
                outcomes[position] = AnswerOutcome(answer, called=True, detail=f"{type(error).__name__}: {error}")
                continue
            if result is None:
                continue
            completion, latency = result
            cache.put(key, dataclasses.asdict(completion))
            answer = _answer(context_set, content_hash, completion, cached=False)
            outcomes[position] = AnswerOutcome(answer, called=True, latency_seconds=latency)
    finally:
        # Requests already in flight finish their current call; queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
    return AnswerReport(tuple(outcome for outcome in outcomes if outcome is not None))
