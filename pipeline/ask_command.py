"""``pipeline ask QUESTION``: one question's context set and cited answer from the current index, printed,
without a run.

The resources are the deployment's own (:func:`pipeline.defs.resources.build_resources`, so the same
environment variables, state store, Chroma collection, BM25 index, chat model, and rerank and answer
caches as the assets), set up and torn down by Dagster's ``build_resources``, which launches no run and
records nothing.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import dagster as dg

from pipeline import settings
from pipeline.answer.prompt import numbered_passages
from pipeline.ask import AskedQuestion, Asker, QuestionError
from pipeline.credentials import Redactor
from pipeline.inference import InferenceConfigurationError
from pipeline.retrieve import synced_search_indexes
from pipeline.settings import SettingError

ANSWER_WIDTH = 100


@contextmanager
def open_asker(resources: Mapping[str, dg.ConfigurableResource], log: Callable[[str], None]) -> Iterator[Asker]:
    """An :class:`~pipeline.ask.Asker` on ``resources`` (keyed as ``build_resources()`` keys them), set up as
    for a run but outside of one; the search indexes are first synced with the state store, as the
    retrieve asset does (``log`` is told what had to be restored). Prompts are redacted of every
    configured secret, as the answers asset's are."""
    with dg.build_resources(dict(resources)) as built:
        store = built.state_store.get()
        embedder = built.embedder.get()
        indexes = synced_search_indexes(store, built.chroma.get(embedder), built.files.lexical_index(), log)
        yield Asker(
            store=store,
            indexes=indexes,
            embedder=embedder,
            client=built.rerank.get(),
            chat=built.chat.get(),
            generation=built.chat.generation_settings(),
            redact=Redactor(*settings.secret_values()),
        )


def run_ask(question: str, *, as_json: bool, local_embeddings: bool) -> int:
    """0 when the question got an answer (or an abstention), 1 when its completion failed, 2 for a question
    or a configuration that cannot be asked."""
    from pipeline.defs.resources import build_resources
    from pipeline.stand_ins import start_missing_stand_ins

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        with ExitStack() as stack:
            start_missing_stand_ins(stack, local_embeddings=local_embeddings)
            asker = stack.enter_context(open_asker(build_resources(), log))
            chunks = len(asker.store.chunks.ids())
            asked = asker.ask(question)
    except (QuestionError, InferenceConfigurationError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for outcome in asked.context.rerank.failed:
        print(f"rerank failed ({outcome.error}): {outcome.detail}", file=sys.stderr)
    if asked.answer.detail:
        print(f"answer failed: {asked.answer.detail}", file=sys.stderr)
    if as_json:
        print(json.dumps(asked_json(asked), ensure_ascii=False, indent=1))
    else:
        print_answer(asked, chunks)
    return 1 if asked.answer.answer.failed else 0


def billed(asked: AskedQuestion) -> dict[str, int]:
    """What asking cost: search units and tokens billed now (none for what came from a cache), and the cache hits."""
    rerank, answer = asked.context.rerank.stats, asked.answer_stats
    return {
        "rerank_search_units": rerank.search_units,
        "rerank_cache_hits": rerank.cache_hits,
        "chat_prompt_tokens": answer.prompt_tokens,
        "chat_completion_tokens": answer.completion_tokens,
        "answer_cache_hits": answer.cache_hits,
    }


def cited_sources(asked: AskedQuestion) -> list[dict[str, Any]]:
    """The passages the answer cites, in order of first mention: number, title, URL and chunk ID."""
    titles = {passage.number: passage.title for passage in numbered_passages(asked.context.context_set.passages)}
    return [
        {"number": c["number"], "title": titles[c["number"]], "url": c["url"], "chunk_id": c["chunk_id"]}
        for c in asked.answer.answer.citations
    ]


def asked_json(asked: AskedQuestion) -> dict[str, Any]:
    answer = asked.answer.answer
    return {
        "question": asked.context.context_set.query,
        "answered": answer.answered,
        "answer": answer.answer,
        "sources": cited_sources(asked),
        "error": answer.error,
        "model": answer.model,
        "prompt_version": answer.prompt_version,
        "context_set": asked.context.context_set.published(),
        "billed": billed(asked),
    }


def print_answer(asked: AskedQuestion, chunks_in_index: int) -> None:
    context_set, answer = asked.context.context_set, asked.answer.answer
    status = (
        f"reranked by {context_set.model}"
        if context_set.reranked
        else f"NOT reranked: {context_set.reason_not_reranked}"
    )
    print(f"question: {context_set.query}")
    print(
        f"context set: {len(context_set.passages)} passages, {context_set.tokens} of {context_set.token_budget} "
        f"tokens, {status}; retrieved with {context_set.embedding_model}"
    )
    if not context_set.passages:
        print(f"no passages found among the {chunks_in_index} chunks of the index", end="")
        print(": run `pipeline demo` or a refresh first" if chunks_in_index == 0 else "")
    print(f"answer by {answer.model} (prompt {answer.prompt_version}):")
    text = answer.answer if answer.error is None else f"(failed: {answer.error}; no answer in its place)"
    for line in (text or "").splitlines():
        print(textwrap.fill(line, ANSWER_WIDTH, initial_indent="   ", subsequent_indent="   "))
    sources = cited_sources(asked)
    print("sources:" if sources else "sources: none")
    for source in sources:
        print(f"   [{source['number']}] {source['title']}  <{source['url']}>")
    cost = billed(asked)
    print(
        f"billed: {cost['rerank_search_units']} rerank search units ({cost['rerank_cache_hits']} from the rerank "
        f"cache); {cost['chat_prompt_tokens']} prompt + {cost['chat_completion_tokens']} completion chat tokens "
        f"({cost['answer_cache_hits']} from the answer cache)"
    )
