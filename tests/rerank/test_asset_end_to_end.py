"""The rerank stage end to end: ``dg.materialize()`` of reranked_candidates (with its check) and
ranked_context_sets against the local service over loopback, for every status code of the
contract and every fault the service injects.

The demo site is crawled, indexed and retrieved once per module; each test reranks a copy of
that data directory, so each starts with an empty rerank cache. The service scores with the
vectors stored at ingest, so a run takes about a second. Every test also checks that neither
the service's key nor the client's appears in the instance's event log, the run record,
stdout/stderr, Python logs, metadata or failure text.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from pipeline.demo import QUERIES_FILE, serve_directory, site_dir
from pipeline.inference import client as client_module
from pipeline.local import LocalRelevanceScorer, LocalRerankService, ServiceConfig, StoredEmbeddings
from pipeline.queries import load_queries
from pipeline.stand_ins import local_scorer
from pipeline.store.schema import CONTEXT_SETS_TABLE
from pipeline.store.state import StateStore, sqlite_url
from tests.support import TEST_KEY, PipelineRun, make_resources, materialization_metadata, write_sources

RERANK_STAGE = dg.AssetSelection.assets("reranked_candidates", "ranked_context_sets")
RETRIEVAL = dg.AssetSelection.assets("queries", "retrieved_candidates")
PUBLISH = dg.AssetSelection.assets("ranked_context_sets")
QUERIES = {query.query_id: query.query for query in load_queries(QUERIES_FILE)}
WRONG_KEY = "inf-wrong-key-9d3b7a61"
# Fast pacing (10 ms apart) so a run of 12 queries is not held by the 250/min default. Read
# timeouts stay well above a normal answer (about 60 ms, several hundred on a loaded machine) so
# only injected hangs time out.
FAST = {"requests_per_minute": 6000}


@dataclass
class Ingested:
    data_dir: Path
    sources: Path
    scorer: LocalRelevanceScorer


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Iterator[Ingested]:
    data_dir = tmp_path_factory.mktemp("ingested")
    with serve_directory(site_dir()) as site_url, dg.DagsterInstance.ephemeral() as instance:
        sources = write_sources(
            data_dir / "sources.yaml",
            # A dozen pages give every query 50 candidates and take a fraction of the whole site's embedding time.
            [{"name": "user-guide", "start_urls": [site_url], "allow_private_hosts": True, "max_pages": 12}],
        )
        # Retrieval never calls the rerank endpoint; nothing listens on this URL.
        run = PipelineRun(make_resources(data_dir, sources, QUERIES_FILE, "http://127.0.0.1:9"), instance)
        run.ingest("user-guide")
        run.downstream(selection=dg.AssetSelection.groups("retrieve"))
    store = StateStore(sqlite_url(data_dir))
    scorer = local_scorer(known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts))
    scorer.warm()
    yield Ingested(data_dir, sources, scorer)
    store.dispose()


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@dataclass
class Stage:
    """One test's copy of the ingested data and the services it talks to."""

    ingested: Ingested
    data_dir: Path
    instance: dg.DagsterInstance
    services: list[LocalRerankService]

    def service(self, **config: object) -> LocalRerankService:
        service = LocalRerankService(ServiceConfig(api_key=TEST_KEY, **config), scorer=self.ingested.scorer)
        service.start()
        self.services.append(service)
        return service

    def run(
        self,
        service: LocalRerankService,
        *,
        raise_on_error: bool = True,
        run_config: dict | None = None,
        **rerank_options: object,
    ) -> dg.ExecuteInProcessResult:
        resources = make_resources(
            self.data_dir, self.ingested.sources, QUERIES_FILE, service.url, **{**FAST, **rerank_options}
        )
        return PipelineRun(resources, self.instance).downstream(
            run_config, raise_on_error=raise_on_error, selection=RERANK_STAGE
        )

    def retrieve(self, queries_path: Path = QUERIES_FILE, top_k: int = 50) -> dg.ExecuteInProcessResult:
        """Store the queries and retrieve their candidates again (no rerank)."""
        resources = make_resources(self.data_dir, self.ingested.sources, queries_path, "http://127.0.0.1:9")
        return PipelineRun(resources, self.instance).downstream(
            {"ops": {"retrieved_candidates": {"config": {"top_k": top_k}}}}, selection=RETRIEVAL
        )

    def publish(self, service: LocalRerankService, queries_path: Path = QUERIES_FILE) -> dg.ExecuteInProcessResult:
        """Materialise ranked_context_sets alone, every passage in rank order (no per-page cap)."""
        resources = make_resources(self.data_dir, self.ingested.sources, queries_path, service.url)
        return PipelineRun(resources, self.instance).downstream(
            {"ops": {"ranked_context_sets": {"config": {"max_passages_per_page": None}}}}, selection=PUBLISH
        )

    def store(self) -> StateStore:
        return StateStore(sqlite_url(self.data_dir))

    def context_sets(self) -> dict[str, dict]:
        lines = (self.data_dir / "ranked_context_sets.jsonl").read_text().splitlines()
        return {context_set["query_id"]: context_set for context_set in map(json.loads, lines)}

    def published_text(self) -> str:
        """The JSONL and every row of pipeline_context_sets, as text: all that the QA system reads."""
        store = self.store()
        with store.engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT * FROM {CONTEXT_SETS_TABLE}")).mappings().all()
        store.dispose()
        assert rows
        return (self.data_dir / "ranked_context_sets.jsonl").read_text() + "\n".join(map(str, rows))


@pytest.fixture
def stage(ingested, instance, tmp_path) -> Iterator[Stage]:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested.data_dir, data_dir)
    stage = Stage(ingested, data_dir, instance, [])
    yield stage
    for service in stage.services:
        service.stop()


@pytest.fixture
def no_secrets(instance, capfd, caplog):
    """Call with the runs of a test: asserts neither key appears anywhere those runs left text."""
    caplog.set_level(logging.DEBUG)

    def check(*results: dg.ExecuteInProcessResult) -> str:
        captured = capfd.readouterr()
        texts = [captured.out, captured.err, caplog.text]
        for result in results:
            texts += [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
            texts.append(dg.serialize_value(instance.get_run_by_id(result.run_id)))
        everything = "\n".join(texts)
        assert TEST_KEY not in everything and WRONG_KEY not in everything
        assert "reranked_candidates" in everything
        return everything

    return check


def settled_requests(service: LocalRerankService, count: int, wait_seconds: float = 5.0) -> list:
    """The service's request log once it holds ``count`` requests: a held request is logged when it ends."""
    deadline = time.monotonic() + wait_seconds
    while len(service.requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return service.requests


def check_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "every_query_reranked"]
    return evaluation


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    return failure.step_failure_data.user_failure_data.description


# --- statuses that no retry changes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_config", "rerank_options", "phrases"),
    [
        (
            {"max_documents": 10},
            {},
            [
                "rejected 50 documents in one request (HTTP 400): too many documents: 50 (at most 10 per request)",
                "lower the run config retrieved_candidates.top_k",
            ],
        ),
        ({}, {"api_key": WRONG_KEY}, ["RERANK_KEY was rejected by http://127.0.0.1:", "set RERANK_KEY"]),
        (
            {"allowed_models": ["amazon-rerank-1-0"]},
            {},
            ["RERANK_KEY has no access to model cohere-rerank-3-5", "RERANK_MODEL_ID"],
        ),
        (
            {},
            {"model_id": "cohere-rerank-9"},
            ["unknown model cohere-rerank-9; valid: cohere-rerank-3-5, amazon-rerank-1-0; check RERANK_MODEL_ID"],
        ),
    ],
    ids=["400-documents-per-request", "401", "403", "404"],
)
def test_a_rejected_setting_fails_the_asset_naming_it_and_keeps_stored_rankings(
    stage, no_secrets, service_config, rerank_options, phrases
):
    stage.run(stage.service())
    before = stage.store().rankings.rankings()
    output_before = (stage.data_dir / "ranked_context_sets.jsonl").read_text()
    rejecting = stage.service(**service_config)
    result = stage.run(rejecting, raise_on_error=False, **rerank_options)

    assert not result.success
    message = failure_text(result)
    for phrase in phrases:
        assert phrase in message
    # Every worker stops at the first rejection: a handful of requests at most, never all 12.
    assert 1 <= len(rejecting.requests) <= 8
    assert {query_id: row.scores for query_id, row in stage.store().rankings.rankings().items()} == {
        query_id: row.scores for query_id, row in before.items()
    }
    assert (stage.data_dir / "ranked_context_sets.jsonl").read_text() == output_before
    assert message in no_secrets(result)


def test_a_400_for_one_querys_content_fails_only_that_query(stage, no_secrets):
    service = stage.service(test_mode=True)
    service.faults.add("400", times=None, text=QUERIES["q03"])
    result = stage.run(service)

    metadata = materialization_metadata(result, "reranked_candidates")
    assert (metadata["queries_reranked"], metadata["queries_failed"]) == (11, 1)
    evaluation = check_evaluation(result)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["failed_query_ids"].value == "q03"
    assert "| q03 | http_400 |" in evaluation.metadata["failures"].value
    q03 = stage.context_sets()["q03"]
    assert q03["reranked"] is False and q03["reason_not_reranked"] == "http_400"
    assert q03["passages"] and all(passage["rerank_score"] is None for passage in q03["passages"])
    no_secrets(result)


# --- faults that retries absorb -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_config", "faults", "rerank_options", "faulty_statuses"),
    [
        ({}, ["429", "429"], {}, [429, 429]),
        ({"omit_retry_after": True}, ["429", "429"], {}, [429, 429]),
        ({"error_rate": 0.2, "seed": 5}, [], {}, None),
        ({"hang_seconds": 2}, ["timeout", "timeout"], {"read_timeout_seconds": 1.0}, [504, 504]),
        ({}, ["malformed", "garbled"], {}, [200, 200]),
    ],
    ids=["429-retry-after", "429-no-retry-after", "random-500s", "timeouts", "malformed-json"],
)
def test_transient_faults_are_retried_and_every_query_is_reranked(
    stage, no_secrets, service_config, faults, rerank_options, faulty_statuses
):
    service = stage.service(test_mode=True, **service_config)
    for fault in faults:
        service.faults.add(fault)
    result = stage.run(service, **rerank_options)

    metadata = materialization_metadata(result, "reranked_candidates")
    assert (metadata["queries_reranked"], metadata["queries_failed"]) == (12, 0)
    assert check_evaluation(result).passed
    logged = settled_requests(service, metadata["requests"])
    faulty = [entry for entry in logged if entry.fault]
    assert faulty, "no fault was injected"
    if faulty_statuses is not None:
        assert [entry.status for entry in faulty] == faulty_statuses
    # Each fault cost one retry, and nothing else did.
    assert metadata["retries"] == len(faulty) and metadata["requests"] == 12 + len(faulty)
    assert metadata["rate_limited_429s"] == sum(entry.status == 429 for entry in logged)
    assert metadata["billed_search_units"] == 12
    assert all(context_set["reranked"] for context_set in stage.context_sets().values())
    no_secrets(result)


def test_queries_past_an_enforced_limit_fail_alone_with_the_reason(stage, no_secrets):
    """The service enforces 5 a minute without Retry-After; the client was told 6,000."""
    service = stage.service(requests_per_minute=5, omit_retry_after=True)
    result = stage.run(service, max_attempts=2)

    metadata = materialization_metadata(result, "reranked_candidates")
    assert metadata["queries_reranked"] == 5 and metadata["queries_failed"] == 7
    assert metadata["rate_limited_429s"] == sum(entry.status == 429 for entry in service.requests) >= 7
    evaluation = check_evaluation(result)
    assert not evaluation.passed and "| rate_limited |" in evaluation.metadata["failures"].value
    no_secrets(result)


def test_latency_is_measured_over_http_and_null_when_everything_was_cached(stage, no_secrets):
    service = stage.service(added_latency_seconds=0.3)
    measured = stage.run(service)
    cached = stage.run(service)

    first = materialization_metadata(measured, "reranked_candidates")
    assert first["latency_samples"] == 12 and 300 <= first["latency_p50_ms"] <= first["latency_p95_ms"]
    second = materialization_metadata(cached, "reranked_candidates")
    assert second["cache_hits"] == 12 and second["requests"] == 0 and second["latency_samples"] == 0
    assert second["latency_p50_ms"] is None and second["latency_p95_ms"] is None
    no_secrets(measured, cached)


# --- failure isolation and resume -----------------------------------------------------------------


def test_the_next_run_sends_only_the_queries_that_failed(stage, no_secrets):
    service = stage.service(test_mode=True)
    service.faults.add("500", times=None, text=QUERIES["q05"])
    service.faults.add("timeout", times=None, text=QUERIES["q09"])
    failing = stage.run(service, max_attempts=2, read_timeout_seconds=1.0)

    evaluation = check_evaluation(failing)
    assert not evaluation.passed
    assert evaluation.metadata["failed_query_ids"].value == "q05, q09"
    failures = evaluation.metadata["failures"].value
    assert "| q05 | http_500 |" in failures and "| q09 | timeout |" in failures
    assert materialization_metadata(failing, "ranked_context_sets")["reranked_sets"] == 10

    service.service.clear()
    retried = stage.run(service)

    assert sorted(entry.query for entry in service.requests) == sorted([QUERIES["q05"], QUERIES["q09"]])
    metadata = materialization_metadata(retried, "reranked_candidates")
    assert (metadata["cache_hits"], metadata["requests"], metadata["billed_search_units"]) == (10, 2, 2)
    assert check_evaluation(retried).passed
    assert all(context_set["reranked"] for context_set in stage.context_sets().values())
    no_secrets(failing, retried)


# --- rankings published only for the candidates they ranked ---------------------------------------


def _questions_moved_to_other_ids(path: Path) -> Path:
    """Every question reworded and moved to the next query's ID: each ID gets other candidates, none cached."""
    ids = list(QUERIES)
    moved = [{"id": query_id, "query": f"{QUERIES[ids[(i + 1) % len(ids)]]} Thanks!"} for i, query_id in enumerate(ids)]
    path.write_text(json.dumps({"queries": moved}))
    return path


@pytest.mark.parametrize(
    "change",
    ["queries-file-changed", "fewer-candidates"],
)
def test_a_401_after_retrieval_changed_publishes_the_retrieval_order_not_stale_scores(
    stage, no_secrets, tmp_path, change
):
    service = stage.service()
    stage.run(service)
    assert all(context_set["reranked"] for context_set in stage.context_sets().values())
    # Retrieval runs again and finds other candidates for every query ...
    queries_path = (
        _questions_moved_to_other_ids(tmp_path / "queries.yaml") if change == "queries-file-changed" else QUERIES_FILE
    )
    stage.retrieve(queries_path, top_k=20 if change == "fewer-candidates" else 50)
    # ... then the key is rotated: rerank is refused and keeps the previous rankings.
    refused = stage.run(service, raise_on_error=False, api_key=WRONG_KEY)
    assert not refused.success and "RERANK_KEY was rejected" in failure_text(refused)
    published = stage.publish(service, queries_path)

    assert materialization_metadata(published, "ranked_context_sets")["reranked_sets"] == 0
    [explained] = [
        e for e in published.get_asset_check_evaluations() if e.check_name == "context_sets_reranked_or_explained"
    ]
    assert explained.passed
    candidates = stage.store().rankings.candidates()
    for query_id, context_set in stage.context_sets().items():
        assert context_set["reranked"] is False, query_id
        assert context_set["reason_not_reranked"] == "candidates changed since rerank"
        assert context_set["api_version"] is None
        passages = context_set["passages"]
        assert passages and all(passage["rerank_score"] is None for passage in passages)
        # Retrieval order: each passage is the current candidate of its retrieval rank, ranks ascending.
        by_rank = {c.retrieval_rank: c.chunk_id for c in candidates[query_id]}
        assert [by_rank[passage["retrieval_rank"]] for passage in passages] == [p["chunk_id"] for p in passages]
        ranks = [passage["retrieval_rank"] for passage in passages]
        assert ranks == sorted(ranks) and ranks[-1] <= (20 if change == "fewer-candidates" else 50)
    no_secrets(refused, published)


# --- the key: checked at setup, never published, never sent elsewhere ------------------------------


def test_a_key_ending_in_a_newline_fails_the_run_at_setup_naming_the_variable(stage, no_secrets):
    service = stage.service()
    stage.run(service)
    output_before = (stage.data_dir / "ranked_context_sets.jsonl").read_text()
    service.service.clear()
    result = stage.run(service, raise_on_error=False, api_key=TEST_KEY + "\n")

    assert not result.success
    assert "RERANK_KEY contains a line feed (\\n) at its end" in no_secrets(result)
    assert service.requests == []
    assert (stage.data_dir / "ranked_context_sets.jsonl").read_text() == output_before


def test_a_key_that_reaches_the_http_layer_appears_in_no_output(stage, no_secrets, monkeypatch):
    """Were the check at setup skipped, the HTTP layer would refuse the header by quoting it."""
    monkeypatch.setattr(client_module, "check_secret", lambda name, value: value, raising=False)
    service = stage.service()
    result = stage.run(service, api_key=TEST_KEY + "\n", max_attempts=1)

    metadata = materialization_metadata(result, "reranked_candidates")
    assert (metadata["queries_reranked"], metadata["queries_failed"]) == (0, 12)
    assert "| connection_error |" in metadata["per_query"]
    context_sets = stage.context_sets()
    assert {(c["reranked"], c["reason_not_reranked"]) for c in context_sets.values()} == {(False, "connection_error")}
    assert TEST_KEY not in stage.published_text() and TEST_KEY not in json.dumps(metadata)
    assert "[REDACTED]" in no_secrets(result)
    assert service.requests == []


def test_run_config_cannot_send_the_key_to_another_host(stage):
    service = stage.service()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        elsewhere = f"http://127.0.0.1:{listener.getsockname()[1]}"
        for field, value in (("url", elsewhere), ("api_key", WRONG_KEY), ("model_id", "amazon-rerank-1-0")):
            with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}"'):
                stage.run(
                    service, run_config={"resources": {"rerank": {"config": {field: value}}}}, read_timeout_seconds=1
                )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert service.requests == []
