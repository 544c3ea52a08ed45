"""``pipeline ask QUESTION``: one question's context set from the current index, printed, without a run.

The resources are the deployment's own (:func:`pipeline.defs.resources.build_resources`, so the same
environment variables, state store, Chroma collection, BM25 index and rerank cache as the assets),
set up and torn down by Dagster's ``build_resources``, which launches no run and records nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import dagster as dg

from pipeline.ask import AskedContextSet, Asker, QuestionError
from pipeline.rerank.errors import RerankConfigurationError
from pipeline.retrieve import synced_search_indexes
from pipeline.settings import SettingError


@contextmanager
def open_asker(resources: Mapping[str, dg.ConfigurableResource], log: Callable[[str], None]) -> Iterator[Asker]:
    """An :class:`~pipeline.ask.Asker` on ``resources`` (keyed as ``build_resources()`` keys them), set up as
    for a run but outside of one; the search indexes are first synced with the state store, as the
    retrieve asset does (``log`` is told what had to be restored)."""
    with dg.build_resources(dict(resources)) as built:
        store = built.state_store.get()
        embedder = built.embedder.get()
        indexes = synced_search_indexes(store, built.chroma.get(embedder), built.files.lexical_index(), log)
        yield Asker(store=store, indexes=indexes, embedder=embedder, client=built.rerank.get())


def run_ask(question: str, *, as_json: bool, local_embeddings: bool) -> int:
    from pipeline.cli import start_missing_stand_ins
    from pipeline.defs.resources import build_resources

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        with ExitStack() as stack:
            start_missing_stand_ins(stack, local_embeddings=local_embeddings)
            asker = stack.enter_context(open_asker(build_resources(), log))
            chunks = len(asker.store.chunks.ids())
            asked = asker.context_set(question)
    except (QuestionError, RerankConfigurationError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asked_json(asked), ensure_ascii=False, indent=1))
    else:
        print_context_set(asked, chunks)
    return 0


def asked_json(asked: AskedContextSet) -> dict[str, Any]:
    stats = asked.rerank.stats
    return {
        "context_set": asked.context_set.published(),
        "billed": {"rerank_search_units": stats.search_units, "rerank_cache_hits": stats.cache_hits},
    }


def print_context_set(asked: AskedContextSet, chunks_in_index: int) -> None:
    context_set = asked.context_set
    if context_set.reranked:
        status = f"reranked by {context_set.model}"
    else:
        status = f"NOT reranked: {context_set.reason_not_reranked}"
        for outcome in asked.rerank.failed:
            print(f"rerank failed ({outcome.error}): {outcome.detail}", file=sys.stderr)
    print(f"question: {context_set.query}")
    print(
        f"context set: {len(context_set.passages)} passages, {context_set.tokens} of {context_set.token_budget} "
        f"tokens, {status}; retrieved with {context_set.embedding_model}"
    )
    if not context_set.passages:
        print(f"no passages found among the {chunks_in_index} chunks of the index", end="")
        print(": run `pipeline demo` or a refresh first" if chunks_in_index == 0 else "")
    for passage in context_set.passages:
        heading = " > ".join(passage["heading_path"]) or passage["title"]
        score = passage["rerank_score"] if passage["rerank_score"] is not None else passage["retrieval_score"]
        print(f"  [{passage['rank']}] {score:.3f}  {heading}  <{passage['url']}>")
    stats = asked.rerank.stats
    cached = " (from the rerank cache)" if stats.cache_hits else ""
    print(f"billed: {stats.search_units} rerank search units{cached}")
