"""Answering context sets through a chat model: citations, the durable cache, failure isolation, the checks' reports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.answer.answering import (
    NO_PASSAGES,
    UNREADABLE_CONVERSATION,
    StoreAnswerCache,
    answer_cache_key,
    answer_context_sets,
)
from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.prompt import NOT_IN_THE_DOCS, PROMPT_VERSION
from pipeline.answer.protocol import GenerationSettings
from pipeline.answer.reports import citation_account, markdown_preview, publication_account
from pipeline.credentials import Redactor
from pipeline.inference import InferenceUnauthorized, InMemoryResultCache
from pipeline.store.records import ContextSet
from tests.answer.citing_chat import CitingChat

SETTINGS = GenerationSettings()
NOTHING_TO_REDACT = Redactor()


def _passage(rank: int, text: str) -> dict:
    return {
        "rank": rank,
        "chunk_id": f"chunk-{rank}-{len(text)}",
        "url": f"https://docs.test/page-{rank}",
        "title": f"Page {rank}",
        "heading_path": ["Guide"],
        "text": text,
        "tokens": len(text.split()),
        "retrieval_rank": rank,
        "retrieval_score": 0.5,
        "rerank_score": 0.9,
    }


def _context_set(query_id: str, query: str, *texts: str) -> ContextSet:
    passages = tuple(_passage(rank, text) for rank, text in enumerate(texts, start=1))
    return ContextSet(
        query_id=query_id,
        query=query,
        model="cohere-rerank-3-5",
        reranked=True,
        api_version="2",
        reason_not_reranked=None,
        token_budget=3000,
        tokens=sum(passage["tokens"] for passage in passages),
        passages=passages,
    )


POOL = _context_set(
    "pool", "How big is the connection pool?", "Timeouts are in ms.", "The connection pool holds 5 sessions."
)
COLOUR = _context_set("colour", "Which colour is the logo?", "Timeouts are in ms.")
EMPTY = _context_set("empty", "What about quantum entanglement?")
SETS = [POOL, COLOUR, EMPTY]


def _answer(sets, chat, cache=None, settings=SETTINGS, redact=NOTHING_TO_REDACT):
    cache = InMemoryResultCache() if cache is None else cache
    return answer_context_sets(sets, chat, settings, cache=cache, redact=redact)


def test_each_context_set_gets_an_answer_with_its_citations_resolved_in_order():
    chat = CitingChat()
    report = _answer(SETS, chat)
    pool, colour, empty = report.answers

    assert pool.answered and pool.answer == "The connection pool holds 5 sessions. [2]"
    assert pool.citations == ({"number": 2, "chunk_id": POOL.passages[1]["chunk_id"], "url": POOL.passages[1]["url"]},)
    assert (pool.model, pool.prompt_version, pool.context_set_hash) == (
        "citing-test-model",
        PROMPT_VERSION,
        POOL.content_hash(),
    )
    assert pool.prompt_tokens > 0 and pool.completion_tokens == 7 and not pool.cached
    assert not colour.answered and not colour.failed and colour.citations == ()
    # No passages: an abstention without a call.
    assert (empty.answered, empty.answer, empty.prompt_tokens) == (False, NO_PASSAGES, 0)
    assert len(chat.requests) == 2
    stats = report.stats
    assert (stats.answered, stats.not_answered, stats.failed, stats.calls, stats.cache_hits) == (1, 2, 0, 2, 0)
    assert stats.latency_samples == 2 and stats.latency_p50_seconds is not None
    assert stats.tokens == pool.prompt_tokens + pool.completion_tokens + colour.prompt_tokens + colour.completion_tokens


def test_an_unchanged_refresh_spends_no_tokens_and_a_changed_set_is_asked_again(store):
    cache = StoreAnswerCache(store)  # the durable cache, on SQLite and PostgreSQL
    first = _answer(SETS, CitingChat(), cache)

    chat = CitingChat()
    again = _answer(SETS, chat, cache)
    assert chat.requests == [] and again.stats.tokens == 0 and again.stats.cache_hits == 2
    assert [replace(answer, cached=False) for answer in again.answers] == first.answers

    edited = _context_set("pool", POOL.query, "Timeouts are in ms.", "The connection pool holds 10 sessions.")
    third = _answer([edited, COLOUR], chat, cache)
    assert len(chat.requests) == 1 and third.answers[0].answer == "The connection pool holds 10 sessions. [2]"
    assert third.stats.cache_hits == 1


def test_the_cache_key_covers_the_chat_model_the_generation_settings_and_the_content():
    key = answer_cache_key("m@host", SETTINGS, "hash")
    assert key != answer_cache_key("m@other-host", SETTINGS, "hash")
    assert key != answer_cache_key("m@host", GenerationSettings(temperature=0.5), "hash")
    assert key != answer_cache_key("m@host", GenerationSettings(max_completion_tokens=100), "hash")
    assert key != answer_cache_key("m@host", SETTINGS, "other-hash")


def test_a_failed_question_is_recorded_as_failed_never_invented_and_asked_again_next_run():
    cache = InMemoryResultCache()
    report = _answer(SETS, CitingChat(failing=[POOL.query]), cache)

    pool = report.answers[0]
    assert (pool.failed, pool.error, pool.answer, pool.answered, pool.citations) == (True, "http_500", None, False, ())
    assert [outcome.detail for outcome in report.failed] == [
        "InferenceServerError: the chat endpoint answered HTTP 500 on every attempt"
    ]
    assert (report.stats.failed, report.stats.not_answered, report.stats.latency_samples) == (1, 2, 1)

    chat = CitingChat()
    retried = _answer(SETS, chat, cache)
    [(_system, user)] = chat.requests  # the failed question alone
    assert POOL.query in user["content"] and retried.answers[0].answered


class LosesTheQuestion:
    """The extractive answerer behind a channel that drops the user message of the ``lost`` questions."""

    def __init__(self, *lost: str) -> None:
        self.lost = lost
        self.extractive = ExtractiveChatModel()

    @property
    def model(self) -> str:
        return self.extractive.model

    def complete(self, messages, settings):
        if any(question in messages[-1]["content"] for question in self.lost):
            messages = messages[:1]
        return self.extractive.complete(messages, settings)


def test_a_conversation_the_chat_model_cannot_read_fails_that_question_only():
    report = _answer(SETS, LosesTheQuestion(POOL.query))

    pool, colour, _empty = report.answers
    assert (pool.failed, pool.error, pool.answer) == (True, UNREADABLE_CONVERSATION, None)
    [failure] = report.failed
    assert failure.detail.startswith("NotACitedAnswerPrompt: the conversation has no <question> block")
    assert not colour.failed and colour.answer.startswith(NOT_IN_THE_DOCS)


def test_a_rejected_key_stops_the_run_and_is_raised():
    chat = CitingChat()
    chat.key_rejected = True
    cache = InMemoryResultCache()
    with pytest.raises(InferenceUnauthorized):
        _answer(SETS, chat, cache)
    assert len(cache) == 0


def test_a_configured_secret_quoted_by_a_page_never_reaches_the_chat_model():
    key = "inf-3c9a7e51d2b84f60"
    leaky = _context_set("leak", "How do I set the key?", f"Set the key: export INFERENCE_KEY={key}.")
    chat = CitingChat()
    report = _answer([leaky], chat, redact=Redactor(key))
    assert key not in str(chat.requests) and "[REDACTED]" in str(chat.requests)
    assert key not in str(report.answers)


def test_the_citation_account_counts_abstentions_and_failures_apart_and_names_each_problem():
    unresolved = _answer([POOL], CitingChat(cite="[2][7]")).answers[0]
    uncited = _answer([POOL], CitingChat(cite="")).answers[0]
    sound = _answer([POOL], CitingChat()).answers[0]
    abstained, _ = _answer([COLOUR, EMPTY], CitingChat()).answers
    failed = _answer([POOL], CitingChat(failing=[POOL.query])).answers[0]
    sets = {"pool": POOL, "colour": COLOUR, "empty": EMPTY}

    assert citation_account({"pool": sound, "colour": abstained, "x": failed}, sets).sound
    account = citation_account({"pool": unresolved, "colour": abstained, "x": failed}, sets)
    assert (account.answered, account.abstentions, account.failed) == (1, 1, 1)
    assert account.problems == (("pool", "cites [7], which no passage has"),)
    assert citation_account({"pool": uncited}, sets).problems == (("pool", "cites no passage"),)
    edited = _context_set("pool", POOL.query, "The connection pool holds 10 sessions.")
    assert citation_account({"pool": sound}, {"pool": edited}).problems == (
        ("pool", "computed from another context set"),
    )


def test_the_publication_account_reports_answers_of_replaced_context_sets_and_sets_without_answers():
    answers = {answer.query_id: answer for answer in _answer([POOL, COLOUR], CitingChat()).answers}
    assert publication_account(answers, answers, {"pool": POOL, "colour": COLOUR}).current

    edited = _context_set("colour", COLOUR.query, "The logo is teal.")
    account = publication_account({"pool": answers["pool"]}, answers, {"pool": POOL, "colour": edited, "empty": EMPTY})
    assert (account.mismatched, account.stale, account.missing) == ((), ("colour",), ("empty",))
    leaked = publication_account(answers, answers, {"pool": POOL, "colour": edited})
    assert leaked.mismatched == ("colour",) and not leaked.current


def test_the_preview_shows_each_answer_under_its_question_with_its_sources():
    answers = _answer(SETS, CitingChat(failing=[COLOUR.query])).answers
    preview = markdown_preview(answers, limit=2)
    assert "**pool**: How big is the connection pool?" in preview
    assert "Sources: [2] <https://docs.test/page-2>" in preview
    assert "*failed (http_500): no answer is published in its place*" in preview
    assert preview.endswith("… 1 more in answers.jsonl")
