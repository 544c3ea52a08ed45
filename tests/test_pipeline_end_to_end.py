"""The whole asset graph on the bundled demo site, over real loopback HTTP, into a temporary data directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from pipeline.demo import QUERIES_FILE, site_dir
from pipeline.queries import load_queries
from pipeline.store.state import StateStore, sqlite_url
from tests.support import PipelineRun, demo_services, materialization_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the demo pipeline twice over unchanged input; yield both runs' results."""
    data_dir = tmp_path_factory.mktemp("data")
    with demo_services(data_dir) as demo:
        service = demo.rerank
        with dg.DagsterInstance.ephemeral() as instance:
            run = PipelineRun(demo.resources, instance)
            first_ingest = run.ingest("user-guide")
            first_downstream = run.downstream()
            store = StateStore(sqlite_url(data_dir))
            first_chunk_ids = store.chunks.ids()
            first_output = (data_dir / "ranked_context_sets.jsonl").read_text()
            requests_after_first = len(service.requests)
            second_ingest = run.ingest("user-guide")
            second_downstream = run.downstream()
            yield {
                "site_url": demo.site_url,
                "data_dir": data_dir,
                "store": store,
                "first_ingest": first_ingest,
                "first_downstream": first_downstream,
                "first_chunk_ids": first_chunk_ids,
                "first_output": first_output,
                "second_ingest": second_ingest,
                "second_downstream": second_downstream,
                "rerank_requests_first": requests_after_first,
                "rerank_requests_second": len(service.requests) - requests_after_first,
            }
            store.dispose()


def _context_sets(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "ranked_context_sets.jsonl").read_text().splitlines()]


def test_every_query_gets_a_reranked_context_set_within_budget(demo_run):
    context_sets = _context_sets(demo_run["data_dir"])
    assert [c["query_id"] for c in context_sets] == [q.query_id for q in load_queries(QUERIES_FILE)]
    for context_set in context_sets:
        assert context_set["reranked"] is True, context_set["reason_not_reranked"]
        assert context_set["model"] == "cohere-rerank-3-5"
        assert context_set["passages"], context_set["query_id"]
        assert context_set["tokens"] <= context_set["token_budget"] == 3000
        scores = [p["rerank_score"] for p in context_set["passages"]]
        # Rerank order, except passages beyond 2 per page, which follow all others (in rerank order).
        split = next((i for i in range(1, len(scores)) if scores[i] > scores[i - 1]), len(scores))
        front, deferred = scores[:split], scores[split:]
        assert front == sorted(front, reverse=True) and deferred == sorted(deferred, reverse=True)
        assert max(Counter(p["url"] for p in context_set["passages"][:split]).values()) <= 2
        assert [p["rank"] for p in context_set["passages"]] == list(range(1, len(scores) + 1))
        for passage in context_set["passages"]:
            assert set(passage) >= {
                "rank",
                "chunk_id",
                "url",
                "title",
                "heading_path",
                "text",
                "tokens",
                "retrieval_rank",
                "retrieval_score",
                "rerank_score",
            }
            path = urlparse(passage["url"]).path.lstrip("/") or "index.html"
            if path.endswith("/"):
                path += "index.html"
            assert (site_dir() / path).is_file(), passage["url"]
            assert passage["url"].startswith(demo_run["site_url"])


def test_metadata_reports_counts_and_billed_units(demo_run):
    crawl = materialization_metadata(demo_run["first_ingest"], "crawled_pages")
    pages = len(list(site_dir().rglob("*.html"))) - 1  # 404.html is not linked
    assert crawl["pages_new"] == pages
    # "/" and "/index.html" are the same page, stored once; two linked downloads are not HTML.
    assert crawl["failures_by_reason"] == {"duplicate_content": 1, "not_html": 2}
    assert crawl["pages_failed"] == 0
    index = materialization_metadata(demo_run["first_ingest"], "vector_index")
    assert index["chunks_embedded"] == index["vectors_total"] == index["collection_count"] > pages
    lexical = materialization_metadata(demo_run["first_ingest"], "lexical_index")
    assert lexical["chunks_added"] == lexical["dagster/row_count"] == index["vectors_total"]
    checks = {check.check_name: check.passed for check in demo_run["first_ingest"].get_asset_check_evaluations()}
    assert checks == {
        "indexes_match_stored_chunks": True,
        "pages_yield_text": True,
        "chunks_within_token_limits": True,
        "sources_refreshed_recently": True,
        "no_orphaned_sources": True,
    }
    retrieve = materialization_metadata(demo_run["first_downstream"], "retrieved_candidates")
    assert retrieve["retriever"] == "hybrid" and retrieve["candidates_from_both"] > 0
    rerank = materialization_metadata(demo_run["first_downstream"], "reranked_candidates")
    assert rerank["billed_search_units"] == rerank["queries"] == 12
    assert rerank["queries_failed"] == 0
    assert "| q01 |" in materialization_metadata(demo_run["first_downstream"], "ranked_context_sets")["preview"]


def test_unchanged_input_reuses_everything(demo_run):
    assert demo_run["store"].chunks.ids() == demo_run["first_chunk_ids"]
    crawl = materialization_metadata(demo_run["second_ingest"], "crawled_pages")
    assert crawl["pages_new"] == crawl["pages_changed"] == 0
    assert crawl["pages_not_modified"] == crawl["pages_fetched"] > 0
    assert materialization_metadata(demo_run["second_ingest"], "extracted_documents")["documents_extracted"] == 0
    assert materialization_metadata(demo_run["second_ingest"], "vector_index")["chunks_embedded"] == 0
    assert materialization_metadata(demo_run["second_ingest"], "lexical_index")["rebuilt"] is False
    rerank = materialization_metadata(demo_run["second_downstream"], "reranked_candidates")
    assert rerank["billed_search_units"] == 0 and rerank["cache_hits"] == 12
    assert demo_run["rerank_requests_second"] == 0
    assert (demo_run["data_dir"] / "ranked_context_sets.jsonl").read_text() == demo_run["first_output"]


def test_the_context_sets_table_holds_every_run_and_its_view_the_jsonl_output(demo_run):
    store = demo_run["store"]
    assert [context_set.published() for context_set in store.context_sets.latest().values()] == _context_sets(
        demo_run["data_dir"]
    )
    runs = store.context_sets.runs()
    assert [run.run_id for run in runs] == [demo_run["second_downstream"].run_id, demo_run["first_downstream"].run_id]
    assert all(run.queries == run.reranked == 12 for run in runs)
    metadata = materialization_metadata(demo_run["second_downstream"], "ranked_context_sets")
    assert (metadata["runs_kept"], metadata["runs_deleted"]) == (2, 0)
    assert metadata["table"] == "pipeline_context_sets (newest run: pipeline_latest_context_sets)"


def test_every_context_set_is_answered_from_its_own_passages_and_an_unchanged_refresh_spends_no_tokens(demo_run):
    context_sets = {c["query_id"]: c for c in _context_sets(demo_run["data_dir"])}
    lines = (demo_run["data_dir"] / "answers.jsonl").read_text().splitlines()
    answers = [json.loads(line) for line in lines]
    assert [answer["query_id"] for answer in answers] == list(context_sets)
    answered = [answer for answer in answers if answer["answered"]]
    assert len(answered) > len(answers) / 2 and not any(answer["error"] for answer in answers)
    for answer in answered:
        own = {passage["chunk_id"] for passage in context_sets[answer["query_id"]]["passages"]}
        assert answer["citations"] and {citation["chunk_id"] for citation in answer["citations"]} <= own
    first = materialization_metadata(demo_run["first_downstream"], "answers")
    second = materialization_metadata(demo_run["second_downstream"], "answers")
    assert first["tokens_spent"] > 0 and (second["tokens_spent"], second["cache_hits"]) == (0, 12)
    checks = [c for c in demo_run["second_downstream"].get_asset_check_evaluations() if c.asset_key.path == ["answers"]]
    assert len(checks) == 3 and all(check.passed for check in checks)


def test_definitions_validate():
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
