"""Step retries and re-execution from failure, on a real (SQLite) Dagster instance and a loopback site."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipeline.defs.jobs import ingest_source_job
from pipeline.defs.partitions import register_sources
from pipeline.defs.retrieve import queries
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, sqlite_url
from tests.crawl.site_server import Reply, sequence
from tests.support import ALL_ASSETS, make_resources
from tests.tiny_site import tiny_site_on_a_persistent_instance

# Retries off: the failure below is not transient, and waiting out the policy's backoff proves nothing.
IN_PROCESS_WITHOUT_RETRIES = {"execution": {"config": {"in_process": {"retries": {"disabled": {}}}}}}
QUERIES_YAML = "queries:\n  - {id: q1, query: 'How do I deploy?'}\n"


@pytest.fixture
def site(tmp_path):
    with tiny_site_on_a_persistent_instance(tmp_path) as site:
        yield site


def ingest_job(data_dir: str, sources_path: str, queries_path: str) -> dg.JobDefinition:
    """The production ingest_source job on the test's resources (rebuilt by Dagster from these arguments)."""
    resources = make_resources(Path(data_dir), Path(sources_path), Path(queries_path), "http://127.0.0.1:9")
    return dg.Definitions(assets=ALL_ASSETS, jobs=[ingest_source_job], resources=resources).resolve_job_def(
        ingest_source_job.name
    )


def _steps(result, event_type: str) -> set[str]:
    return {event.step_key for event in result.all_events if event.event_type_value == event_type}


def test_reexecution_from_failure_runs_only_the_failed_step_and_what_follows(site):
    instance = site.instance
    register_sources(instance, ["alpha"])
    job = dg.build_reconstructable_job(
        __name__,
        "ingest_job",
        reconstructable_kwargs={
            "data_dir": str(site.data_dir),
            "sources_path": str(site.sources_path),
            "queries_path": str(site.queries_path),
        },
    )
    # A file where the lexical index directory belongs: the last ingest step cannot write.
    blocker = site.data_dir / "lexical"
    blocker.write_text("in the way")
    failed = dg.execute_job(job, instance, run_config=IN_PROCESS_WITHOUT_RETRIES, tags={"dagster/partition": "alpha"})
    assert not failed.success
    assert _steps(failed, "STEP_FAILURE") == {"lexical_index"}
    assert {"crawled_pages", "extracted_documents", "document_chunks", "vector_index"} <= _steps(failed, "STEP_SUCCESS")

    blocker.unlink()
    requests_before = len(site.server.log)
    # The UI's "Re-execute from failure" copies the parent run's tags (its partition among them);
    # execute_job leaves that to the caller.
    retried = dg.execute_job(
        job,
        instance,
        run_config=IN_PROCESS_WITHOUT_RETRIES,
        tags=instance.get_run_by_id(failed.run_id).tags,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
    )
    assert retried.success
    assert _steps(retried, "STEP_START") == {
        "lexical_index",
        "lexical_index_indexes_match_stored_chunks",
        "lexical_index_no_orphaned_sources",
        "lexical_index_sources_refreshed_recently",
    }
    assert len(site.server.log) == requests_before  # nothing crawled again
    run = instance.get_run_by_id(retried.run_id)
    assert run.parent_run_id == failed.run_id and run.tags["dagster/partition"] == "alpha"
    store = StateStore(sqlite_url(site.data_dir))
    assert LexicalIndex(site.data_dir).ids("alpha") == store.chunks.ids("alpha") != set()
    store.dispose()


def _queries_run(site, queries_location: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    resources = make_resources(site.data_dir, site.sources_path, queries_location, site.rerank.url)
    return dg.materialize(
        [queries],
        resources={"files": resources["files"], "state_store": resources["state_store"]},
        instance=site.instance,
        raise_on_error=raise_on_error,
    )


def test_a_transient_failure_is_retried_by_the_step_retry_policy(site):
    route = "/raw/queries.yaml"
    site.server.routes[route] = sequence(Reply(503, "try later"), Reply(body=QUERIES_YAML))
    result = _queries_run(site, site.server.url(route))
    assert result.success
    events = [e.event_type_value for e in result.all_events if e.step_key == "queries"]
    assert events.count("STEP_UP_FOR_RETRY") == 1 and events[-1] == "STEP_SUCCESS"
    assert site.server.count(route) == 2


def test_a_broken_queries_file_fails_at_once_and_keeps_the_stored_queries(site):
    _queries_run(site, str(site.queries_path))
    store = StateStore(sqlite_url(site.data_dir))
    stored = store.rankings.queries()
    site.queries_path.write_text("queries:\n  - {id: q1}\n")
    result = _queries_run(site, str(site.queries_path), raise_on_error=False)
    assert not result.success
    events = [e.event_type_value for e in result.all_events if e.step_key == "queries"]
    assert "STEP_FAILURE" in events and "STEP_UP_FOR_RETRY" not in events
    assert store.rankings.queries() == stored
    store.dispose()
