"""``pipeline ask``'s retrieval path on an ingested demo index: real Chroma, BM25 index, state store and rerank
service on loopback, with the resources set up outside of any run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from pipeline.ask import ASK_QUERY_ID, QuestionError
from pipeline.ask_command import open_asker, print_context_set
from pipeline.defs.context_sets import ContextConfig
from pipeline.defs.rerank import RerankConfig
from pipeline.defs.retrieve import RetrieveConfig
from pipeline.demo import QUERIES_FILE
from pipeline.queries import load_queries
from pipeline.ranking import RankingPlan
from pipeline.store.schema import metadata, rerank_cache
from pipeline.store.state import StateStore, sqlite_url
from tests.support import TEST_KEY, PipelineRun, demo_services

REPO = Path(__file__).resolve().parents[1]
QUERIES = {query.query_id: query.query for query in load_queries(QUERIES_FILE)}
NEW_QUESTION = "Can I make the crawler skip the changelog pages?"


def _tables(store: StateStore) -> dict[str, list[tuple]]:
    """Every row of every pipeline table but the rerank cache, sorted."""
    with store.engine.connect() as connection:
        return {
            table.name: sorted(map(tuple, connection.execute(sa.select(table))), key=repr)
            for table in metadata.sorted_tables
            if table is not rerank_cache
        }


def _cache_entries(store: StateStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(rerank_cache)).scalar_one()


@pytest.fixture(scope="module")
def asked(tmp_path_factory):
    """Ingest the demo site and publish its context sets; then ask a queries-file question, a new one twice."""
    data_dir = tmp_path_factory.mktemp("data")
    with demo_services(data_dir) as demo:
        service, resources = demo.rerank, demo.resources
        with dg.DagsterInstance.ephemeral() as instance:
            run = PipelineRun(resources, instance)
            run.ingest("user-guide")
            run.downstream()
        store = StateStore(sqlite_url(data_dir))
        published_file = (data_dir / "ranked_context_sets.jsonl").read_text()
        tables_before, cache_before = _tables(store), _cache_entries(store)
        requests = [len(service.requests)]
        logged: list[str] = []
        with open_asker(resources, logged.append) as asker:
            known = asker.context_set(f"  {QUERIES['q06']}\n")
            requests.append(len(service.requests))
            new = asker.context_set(NEW_QUESTION)
            requests.append(len(service.requests))
            new_again = asker.context_set(NEW_QUESTION)
            requests.append(len(service.requests))
            with pytest.raises(QuestionError, match="the question must be a non-empty string"):
                asker.context_set("   ")
        yield {
            "data_dir": data_dir,
            "service_url": service.url,
            "store": store,
            "published": store.context_sets.latest(),
            "published_file": published_file,
            "tables_before": tables_before,
            "cache_before": cache_before,
            "requests": requests,
            "logged": logged,
            "known": known,
            "new": new,
            "new_again": new_again,
        }
        store.dispose()


def test_a_queries_file_question_gets_the_published_context_set_from_the_rerank_cache(asked):
    context_set = asked["known"].context_set
    published = asked["published"]["q06"]
    assert context_set.query_id == ASK_QUERY_ID
    assert context_set.query == published.query  # stripped, like the queries file
    assert context_set.reranked and context_set.model == published.model
    assert context_set.embedding_model == published.embedding_model
    assert context_set.passages == published.passages
    assert (context_set.tokens, context_set.token_budget) == (published.tokens, published.token_budget)
    stats = asked["known"].rerank.stats
    assert (stats.cache_hits, stats.search_units, stats.calls) == (1, 0, 0)
    assert asked["requests"][1] == asked["requests"][0]


def test_a_new_question_is_reranked_once_then_from_the_cache(asked):
    new, again = asked["new"], asked["new_again"]
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


def test_nothing_but_the_rerank_cache_is_written(asked):
    store = asked["store"]
    published = ("pipeline_queries", "pipeline_candidates", "pipeline_reranked", "pipeline_context_sets")
    assert all(asked["tables_before"][name] for name in published)
    assert _tables(store) == asked["tables_before"]
    assert store.context_sets.latest() == asked["published"]
    assert (asked["data_dir"] / "ranked_context_sets.jsonl").read_text() == asked["published_file"]
    # The new question's rerank result, kept for the next ask of it.
    assert _cache_entries(store) == asked["cache_before"] + 1
    # The indexes were in sync with the state store: nothing to restore.
    assert asked["logged"] == []


def test_the_plan_defaults_are_the_assets_defaults():
    retrieve, rerank, context = RetrieveConfig(), RerankConfig(), ContextConfig()
    assert retrieve.retriever == "hybrid" and rerank.top_n is None
    assert RankingPlan() == RankingPlan(
        top_k=retrieve.top_k,
        fusion=retrieve.fusion(),
        token_budget=context.token_budget,
        max_passages_per_page=context.max_passages_per_page,
    )


def test_the_command_prints_the_context_set_as_json(asked):
    environment = {
        **os.environ,
        "PIPELINE_DATA_DIR": str(asked["data_dir"]),
        "RERANK_URL": asked["service_url"],
        "RERANK_KEY": TEST_KEY,
    }
    for name in ("DATABASE_URL", "EMBEDDING_URL", "EMBEDDING_KEY", "EMBEDDING_MODEL_ID", "CHROMA_HOST"):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ask", NEW_QUESTION, "--json", "--local-embeddings"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    assert output["context_set"] == asked["new"].context_set.published()
    assert output["billed"] == {"rerank_search_units": 0, "rerank_cache_hits": 1}


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


def test_the_text_output_lists_every_passage_and_what_was_billed(asked, capsys):
    print_context_set(asked["new"], chunks_in_index=len(asked["store"].chunks.ids()))
    lines = capsys.readouterr().out.splitlines()
    passages = asked["new"].context_set.passages
    assert lines[0] == f"question: {NEW_QUESTION}"
    assert lines[1].startswith(f"context set: {len(passages)} passages, ")
    assert "reranked by cohere-rerank-3-5; retrieved with all-MiniLM-L6-v2" in lines[1]
    assert [line.split("<")[-1].rstrip(">") for line in lines[2:-1]] == [passage["url"] for passage in passages]
    assert lines[-1] == "billed: 1 rerank search units"
