"""``pipeline ask`` on an ingested demo index: real Chroma, BM25 index, state store, rerank service on loopback
and the extractive answerer (or the chat stand-in over HTTP, for the command), with the resources set up
outside of any run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from pipeline.answer.prompt import numbered_passages
from pipeline.ask import ASK_QUERY_ID, QuestionError
from pipeline.ask_command import open_asker, print_answer
from pipeline.defs.context_sets import ContextConfig
from pipeline.defs.rerank import RerankConfig
from pipeline.defs.retrieve import RetrieveConfig
from pipeline.demo import QUERIES_FILE
from pipeline.queries import load_queries
from pipeline.ranking import RankingPlan
from pipeline.store.schema import answer_cache, metadata, rerank_cache
from pipeline.store.state import StateStore, sqlite_url
from tests.chat_stand_in import API_KEY as CHAT_KEY
from tests.chat_stand_in import MODEL as CHAT_MODEL
from tests.chat_stand_in import chat_stand_in
from tests.support import TEST_KEY, PipelineRun, demo_services

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_FILES = ("ranked_context_sets.jsonl", "answers.jsonl")
QUERIES = {query.query_id: query.query for query in load_queries(QUERIES_FILE)}
NEW_QUESTION = "Can I make the crawler skip the changelog pages?"
# Of the questions the demo site does not answer (pipeline/demo/unanswerable_queries.yaml).
OFF_TOPIC_QUESTION = "Can the bot post its answers to a Slack channel?"
CACHES = (rerank_cache, answer_cache)


def _tables(store: StateStore) -> dict[str, list[tuple]]:
    """Every row of every pipeline table but the rerank and answer caches, sorted."""
    with store.engine.connect() as connection:
        return {
            table.name: sorted(map(tuple, connection.execute(sa.select(table))), key=repr)
            for table in metadata.sorted_tables
            if table not in CACHES
        }


def _cache_entries(store: StateStore) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in CACHES
        }


@pytest.fixture(scope="module")
def asked(tmp_path_factory):
    """Ingest the demo site, publish its context sets and answers; then ask a queries-file question, a new one
    twice and an off-topic one."""
    data_dir = tmp_path_factory.mktemp("data")
    with demo_services(data_dir) as demo:
        service, resources = demo.rerank, demo.resources
        with dg.DagsterInstance.ephemeral() as instance:
            run = PipelineRun(resources, instance)
            run.ingest("user-guide")
            run.downstream()
        store = StateStore(sqlite_url(data_dir))
        published_files = {name: (data_dir / name).read_text() for name in PUBLISHED_FILES}
        tables_before, caches_before = _tables(store), _cache_entries(store)
        requests = [len(service.requests)]
        logged: list[str] = []
        with open_asker(resources, logged.append) as asker:
            known = asker.ask(f"  {QUERIES['q06']}\n")
            requests.append(len(service.requests))
            new = asker.ask(NEW_QUESTION)
            requests.append(len(service.requests))
            new_again = asker.ask(NEW_QUESTION)
            requests.append(len(service.requests))
            off_topic = asker.ask(OFF_TOPIC_QUESTION)
            with pytest.raises(QuestionError, match="the question must be a non-empty string"):
                asker.ask("   ")
        yield {
            "data_dir": data_dir,
            "service_url": service.url,
            "store": store,
            "published": store.context_sets.latest(),
            "published_answers": store.answers.latest(),
            "published_files": published_files,
            "tables_before": tables_before,
            "tables_after": _tables(store),
            "caches_before": caches_before,
            "caches_after": _cache_entries(store),
            "requests": requests,
            "logged": logged,
            "known": known,
            "new": new,
            "new_again": new_again,
            "off_topic": off_topic,
        }
        store.dispose()


def test_a_queries_file_question_gets_the_published_context_set_from_the_rerank_cache(asked):
    context_set = asked["known"].context.context_set
    published = asked["published"]["q06"]
    assert context_set.query_id == ASK_QUERY_ID
    assert context_set.query == published.query  # stripped, like the queries file
    assert context_set.reranked and context_set.model == published.model
    assert context_set.embedding_model == published.embedding_model
    assert context_set.passages == published.passages
    assert (context_set.tokens, context_set.token_budget) == (published.tokens, published.token_budget)
    stats = asked["known"].context.rerank.stats
    assert (stats.cache_hits, stats.search_units, stats.calls) == (1, 0, 0)
    assert asked["requests"][1] == asked["requests"][0]


def test_a_new_question_is_reranked_once_then_from_the_cache(asked):
    new, again = asked["new"].context, asked["new_again"].context
    assert new.context_set.reranked and new.context_set.passages
    assert new.rerank.stats.search_units == 1 and new.rerank.stats.cache_hits == 0
    assert asked["requests"][2] == asked["requests"][1] + 1
    assert again.context_set == new.context_set
    assert again.rerank.stats.search_units == 0 and again.rerank.stats.cache_hits == 1
    assert asked["requests"][3] == asked["requests"][2]
    passages = new.context_set.passages
    assert [passage["rank"] for passage in passages] == list(range(1, len(passages) + 1))
    assert all(passage["rerank_score"] is not None for passage in passages)
    assert sum(passage["tokens"] for passage in passages) == new.context_set.tokens <= 3000


def test_nothing_but_the_caches_is_written(asked):
    store = asked["store"]
    published = (
        "pipeline_queries",
        "pipeline_candidates",
        "pipeline_reranked",
        "pipeline_context_sets",
        "pipeline_answers",
    )
    assert all(asked["tables_before"][name] for name in published)
    assert asked["tables_after"] == asked["tables_before"]
    assert store.context_sets.latest() == asked["published"]
    assert store.answers.latest() == asked["published_answers"]
    assert ASK_QUERY_ID not in asked["published_answers"]
    for name, text in asked["published_files"].items():
        assert (asked["data_dir"] / name).read_text() == text
    # The new and the off-topic questions' rerank results, and the three questions' answers: kept for the
    # next ask of them (the empty question reached neither).
    assert asked["caches_after"] == {
        "pipeline_rerank_cache": asked["caches_before"]["pipeline_rerank_cache"] + 2,
        "pipeline_answer_cache": asked["caches_before"]["pipeline_answer_cache"] + 3,
    }
    # The indexes were in sync with the state store: nothing to restore.
    assert asked["logged"] == []


def test_a_question_is_answered_with_citations_of_its_own_passages(asked):
    question = asked["new"]
    answer, passages = question.answer.answer, question.context.context_set.passages
    assert answer.answered and answer.error is None
    assert answer.query_id == ASK_QUERY_ID and answer.query == NEW_QUESTION
    assert answer.model == "extractive-answerer"
    assert answer.citations
    by_number = {passage.number: passage for passage in numbered_passages(passages)}
    for citation in answer.citations:
        passage = by_number[citation["number"]]
        assert (citation["chunk_id"], citation["url"]) == (passage.chunk_id, passage.url)
        assert f"[{citation['number']}]" in answer.answer
    assert answer.context_set_hash == question.context.context_set.content_hash()
    assert question.answer.called and not answer.cached
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


def test_the_same_question_again_costs_no_tokens(asked):
    first, again = asked["new"], asked["new_again"]
    assert first.answer_stats.tokens > 0 and first.answer_stats.cache_hits == 0
    assert again.answer.answer.cached and not again.answer.called
    assert (again.answer_stats.tokens, again.answer_stats.cache_hits) == (0, 1)
    assert again.answer.answer.answer == first.answer.answer.answer
    assert again.answer.answer.citations == first.answer.answer.citations


def test_an_off_topic_question_abstains_and_cites_nothing(asked):
    question = asked["off_topic"]
    answer = question.answer.answer
    assert question.context.context_set.passages  # there were passages to answer from; they do not say
    assert not answer.answered and answer.error is None
    assert answer.answer.startswith("NOT IN THE DOCS:")
    assert answer.citations == ()


def test_the_plan_defaults_are_the_assets_defaults():
    retrieve, rerank, context = RetrieveConfig(), RerankConfig(), ContextConfig()
    assert retrieve.retriever == "hybrid" and rerank.top_n is None
    assert RankingPlan() == RankingPlan(
        top_k=retrieve.top_k,
        fusion=retrieve.fusion(),
        token_budget=context.token_budget,
        max_passages_per_page=context.max_passages_per_page,
    )


def test_the_command_prints_one_json_object(asked):
    environment = {
        **os.environ,
        "PIPELINE_DATA_DIR": str(asked["data_dir"]),
        "RERANK_URL": asked["service_url"],
        "RERANK_KEY": TEST_KEY,
    }
    for name in ("DATABASE_URL", "EMBEDDING_URL", "EMBEDDING_KEY", "EMBEDDING_MODEL_ID", "CHROMA_HOST"):
        environment.pop(name, None)
    # The chat model attached --as INFERENCE, played by the stand-in over HTTP.
    with chat_stand_in() as chat:
        environment |= {"INFERENCE_URL": chat.url, "INFERENCE_KEY": CHAT_KEY, "INFERENCE_MODEL_ID": CHAT_MODEL}
        completed = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "ask", NEW_QUESTION, "--json", "--local-embeddings"],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        chat_requests = len(chat.requests)
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    context_set = asked["new"].context.context_set
    assert set(output) == {
        "question",
        "answered",
        "answer",
        "sources",
        "error",
        "model",
        "prompt_version",
        "context_set",
        "billed",
    }
    assert output["question"] == NEW_QUESTION
    assert output["context_set"] == context_set.published()
    assert output["answered"] is True and output["error"] is None
    passages = {passage.number: passage for passage in numbered_passages(context_set.passages)}
    assert output["sources"]
    for source in output["sources"]:
        passage = passages[source["number"]]
        assert source == {
            "number": passage.number,
            "title": passage.title,
            "url": passage.url,
            "chunk_id": passage.chunk_id,
        }
        assert f"[{source['number']}]" in output["answer"]
    # Another chat model than the extractive answerer in process, so its answer is not in the cache yet.
    assert chat_requests == 1
    billed = output["billed"]
    assert (billed["rerank_search_units"], billed["rerank_cache_hits"], billed["answer_cache_hits"]) == (0, 1, 0)
    assert billed["chat_prompt_tokens"] > 0 and billed["chat_completion_tokens"] > 0
    assert CHAT_KEY not in completed.stdout + completed.stderr


def test_the_command_refuses_an_empty_question(asked):
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ask", " ", "--local-embeddings"],
        cwd=REPO,
        env={**os.environ, "PIPELINE_DATA_DIR": str(asked["data_dir"]), "RERANK_URL": asked["service_url"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == "error: the question must be a non-empty string"


def test_the_text_output_shows_the_answer_its_sources_and_what_was_billed(asked, capsys):
    question = asked["new_again"]
    print_answer(question, chunks_in_index=len(asked["store"].chunks.ids()))
    lines = capsys.readouterr().out.splitlines()
    context_set, answer = question.context.context_set, question.answer.answer
    assert lines[0] == f"question: {NEW_QUESTION}"
    assert lines[1].startswith(f"context set: {len(context_set.passages)} passages, ")
    assert "reranked by cohere-rerank-3-5; retrieved with all-MiniLM-L6-v2" in lines[1]
    assert lines[2] == f"answer by extractive-answerer (prompt {answer.prompt_version}):"
    sources = lines.index("sources:")
    assert " ".join(line.strip() for line in lines[3:sources]) == " ".join(answer.answer.split())
    titles = {passage.number: passage.title for passage in numbered_passages(context_set.passages)}
    assert lines[sources + 1 : -1] == [
        f"   [{c['number']}] {titles[c['number']]}  <{c['url']}>" for c in answer.citations
    ]
    assert lines[-1] == (
        "billed: 0 rerank search units (1 from the rerank cache); 0 prompt + 0 completion chat tokens "
        "(1 from the answer cache)"
    )


def test_the_text_output_of_an_abstention_lists_no_sources(asked, capsys):
    print_answer(asked["off_topic"], chunks_in_index=len(asked["store"].chunks.ids()))
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].strip().startswith("NOT IN THE DOCS:")
    assert "sources: none" in lines
