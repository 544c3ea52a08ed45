"""Each asset check passes on a good fixture and fails on a broken one, materialised on real resources."""

from __future__ import annotations

import time
from dataclasses import replace

import dagster as dg
import pytest

from pipeline.defs import ingest, rerank
from pipeline.defs.automation import source_freshness_check
from pipeline.defs.partitions import register_sources
from pipeline.store.records import StoredChunk
from pipeline.store.state import StateStore, sqlite_url
from tests.support import ALL_ASSETS
from tests.tiny_site import tiny_site

SHELL_PAGE = (
    '<html><head><title>App</title></head><body><div id="root"></div>'
    '<a href="{link}"></a><script>window.render()</script></body></html>'
)


@pytest.fixture
def site(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance, tiny_site(tmp_path, instance) as site:
        yield site


@pytest.fixture
def store(site):
    state = StateStore(sqlite_url(site.data_dir))
    yield state
    state.dispose()


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def metadata(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {key: value.value for key, value in evaluation.metadata.items()}


def run_check_alone(site, check) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        ALL_ASSETS, selection=dg.AssetSelection.checks(check), resources=site.resources, instance=site.instance
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_pages_yield_text_fails_for_a_site_that_renders_with_javascript(site):
    good = evaluations(site.run.ingest("alpha"))["pages_yield_text"]
    assert good.passed and metadata(good)["share_with_text"] == {"alpha": 1.0}

    site.server.page("/shells/index.html", SHELL_PAGE.format(link="app.html"))
    site.server.page("/shells/app.html", SHELL_PAGE.format(link="index.html"))
    site.list_sources("alpha", "shells")
    bad = evaluations(site.run.ingest("shells"))["pages_yield_text"]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    details = metadata(bad)
    assert details["pages_fetched"] == 2 and details["pages_with_text"] == 0 and details["min_share"] == 0.9
    assert "/shells/app.html" in details["pages_without_text"]
    assert "shells" in bad.description


def test_chunks_within_token_limits_uses_the_run_limit_and_catches_oversized_chunks(site, store):
    small = site.run.ingest("alpha", run_config={"ops": {"document_chunks": {"config": {"max_tokens": 64}}}})
    good = evaluations(small)["chunks_within_token_limits"]
    assert good.passed and metadata(good)["max_tokens"] == 64 and 0 < metadata(good)["largest_chunk_tokens"] <= 64

    # A chunker regression: one chunk far past both limits.
    url = site.server.url("/alpha/tuning.html")
    text = " ".join(f"parameter{i} controls batching" for i in range(150))
    oversized = StoredChunk("oversized", "alpha", url, "Tuning alpha", ("Tuning alpha",), text, text, 7, 0)
    store.chunks.replace(source="alpha", url=url, new_chunks=[oversized], chunked_key="forged")
    bad = run_check_alone(site, ingest.chunks_within_token_limits)
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    details = metadata(bad)
    # Counted afresh: the stored token_count of 7 does not hide it.
    assert details["max_tokens"] == 200 and details["chunks_over_max_tokens"] == 1
    assert details["chunks_over_embedding_window"] == 1 and "oversized" in details["examples"]

    # Deeply indented code: within both token limits, past the embeddings endpoint's 2,048 characters.
    indented = "\n".join(" " * 120 + f"set{i} = {i};" for i in range(20))
    too_long = StoredChunk("too-long", "alpha", url, "Tuning alpha", ("Tuning alpha",), indented, indented, 7, 0)
    store.chunks.replace(source="alpha", url=url, new_chunks=[too_long], chunked_key="forged")
    wide = metadata(run_check_alone(site, ingest.chunks_within_token_limits))
    assert (wide["chunks_over_max_tokens"], wide["chunks_over_embedding_window"]) == (0, 0)
    assert wide["max_characters"] == 2048 and wide["chunks_over_max_characters"] == 1
    assert "| too-long | characters | 2619 |" in wide["examples"]


def test_sources_refreshed_recently_fails_for_a_source_never_or_long_ago_refreshed(site, monkeypatch):
    good = evaluations(site.run.ingest("alpha"))["sources_refreshed_recently"]
    assert good.passed and metadata(good)["overdue_sources"] == 0

    # The hourly schedule runs the check on its own, outside any ingest run.
    definitions = dg.Definitions(assets=ALL_ASSETS, schedules=[source_freshness_check], resources=site.resources)
    hourly = definitions.resolve_job_def(source_freshness_check.job_name)
    register_sources(site.instance, ["beta"])
    never = evaluations(hourly.execute_in_process(instance=site.instance))["sources_refreshed_recently"]
    assert not never.passed and never.severity == dg.AssetCheckSeverity.ERROR
    assert metadata(never)["overdue_sources"] == 1 and "| beta | never | yes |" in metadata(never)["sources_by_age"]

    site.run.ingest("beta")
    monkeypatch.setattr(ingest, "FRESHNESS_MAX_AGE_HOURS", 0.5 / 3600)
    time.sleep(0.6)
    stale = run_check_alone(site, ingest.sources_refreshed_recently)
    assert not stale.passed and metadata(stale)["overdue_sources"] == 2
    assert stale.description.startswith("overdue: alpha, beta")


def test_every_query_has_a_context_set_fails_for_a_query_nothing_covers(site):
    site.run.ingest("alpha")
    good = evaluations(site.run.downstream())["every_query_has_a_context_set"]
    assert good.passed and metadata(good)["queries"] == 2

    site.write_queries({"q1": "How do I deploy on Heroku?", "q9": "zebra xylophone quokka"})
    lexical_only = {"ops": {"retrieved_candidates": {"config": {"retriever": "lexical"}}}}
    bad = evaluations(site.run.downstream(run_config=lexical_only))["every_query_has_a_context_set"]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    details = metadata(bad)
    assert details["context_sets_without_passages"] == 1 and details["queries_without_context_set"] == 0
    assert "| q9 | no passages |" in details["examples"]


def test_context_sets_reranked_or_explained_fails_for_a_set_without_reason(site, store):
    site.run.ingest("alpha")
    good = evaluations(site.run.downstream())["context_sets_reranked_or_explained"]
    assert good.passed and metadata(good)["context_sets_reranked"] == 2

    latest = store.context_sets.latest()
    explained = replace(latest["q1"], reranked=False, reason_not_reranked="RerankUnavailable: timeout")
    silent = replace(latest["q2"], reranked=False, reason_not_reranked=None)
    store.context_sets.save("a-later-run", [explained, silent], keep_runs=30)
    bad = run_check_alone(
        site, dg.AssetCheckKey(dg.AssetKey("ranked_context_sets"), "context_sets_reranked_or_explained")
    )
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    details = metadata(bad)
    assert details["not_reranked_with_reason"] == 1 and details["inconsistent"] == 1
    assert "| q2 | not reranked and gives no reason |" in details["problems"]


def test_billed_units_within_budget_fails_when_a_run_bills_more(site, monkeypatch):
    site.run.ingest("alpha")
    monkeypatch.setattr(rerank, "RERANK_UNITS_BUDGET", 1)
    over = evaluations(site.run.downstream())["billed_units_within_budget"]
    assert not over.passed and over.severity == dg.AssetCheckSeverity.ERROR
    assert metadata(over) == {"billed_search_units": 2, "budget": 1}
    # The same queries again come from the rerank cache and bill nothing.
    cached = evaluations(site.run.downstream())["billed_units_within_budget"]
    assert cached.passed and metadata(cached)["billed_search_units"] == 0
