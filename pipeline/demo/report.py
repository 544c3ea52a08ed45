"""What ``pipeline demo`` prints: each run's counts, each query's top passages, each answer with its sources."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg

ANSWER_WIDTH = 100


def print_materializations(result: dg.ExecuteInProcessResult) -> None:
    """One line per materialised asset: its whole-number metadata."""
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        counts = {
            key: value.value
            for key, value in materialization.metadata.items()
            if isinstance(value.value, int) and not isinstance(value.value, bool)
        }
        partition = f"[{materialization.partition}]" if materialization.partition else ""
        print(f"  {materialization.asset_key.to_user_string()}{partition}: {json.dumps(counts)}")


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key.to_user_string() == asset:
            return {key: value.value for key, value in event.materialization.metadata.items()}
    return {}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _heading(passage: dict[str, Any]) -> str:
    return " > ".join(passage["heading_path"]) or passage["title"]


def print_context_sets(path: Path, result: dg.ExecuteInProcessResult, top: int) -> None:
    """Each query's ``top`` passages, the embedding models and the search units the run billed."""
    print()
    embedding_models = set()
    for context_set in _jsonl(path):
        embedding_models.add(context_set["embedding_model"])
        status = f"reranked by {context_set['model']}" if context_set["reranked"] else "NOT reranked"
        print(f"{context_set['query_id']}: {context_set['query']}  ({status})")
        for passage in context_set["passages"][:top]:
            print(f"   {passage['rank']}. [{passage['rerank_score'] or 0:.3f}] {_heading(passage)}  <{passage['url']}>")
    print(f"\nretrieved with embedding model: {', '.join(sorted(embedding_models))}")
    print(f"billed search units this run: {_metadata(result, 'reranked_candidates').get('billed_search_units', 0)}")
    print(f"context sets: {path.resolve()}")


def print_answers(path: Path, context_sets_path: Path, result: dg.ExecuteInProcessResult) -> None:
    """Each answer under its question, with the passages it cites, and what the run spent on them."""
    passages = {
        passage["chunk_id"]: passage for context_set in _jsonl(context_sets_path) for passage in context_set["passages"]
    }
    answers = _jsonl(path)
    print()
    for answer in answers:
        print(f"{answer['query_id']}: {answer['query']}")
        text = answer["answer"] if answer["error"] is None else f"(failed: {answer['error']}; no answer published)"
        print(textwrap.fill(text, ANSWER_WIDTH, initial_indent="   ", subsequent_indent="   "))
        for citation in answer["citations"]:
            passage = passages.get(citation["chunk_id"])
            heading = f"{_heading(passage)}  " if passage else ""
            print(f"   [{citation['number']}] {heading}<{citation['url']}>")
    spent = _metadata(result, "answers")
    writers = ", ".join(sorted({answer["model"] for answer in answers}))
    # The stand-in takes the model ID a deploy attaches, but it is not that model: say who wrote the answers first.
    print(f"\nanswers written by {writers}, requested as {spent.get('model')}")
    print(
        f"{spent.get('answered')} answered, {spent.get('not_answered')} not in the docs, {spent.get('failed')} failed; "
        f"chat tokens this run: {spent.get('tokens_spent')} ({spent.get('cache_hits')} answers from the cache)"
    )
    print(f"answers: {path.resolve()}")
