"""The refresh schedule, the sensors and the context-sets automation, evaluated with Dagster's test
utilities against a real instance, real files and real ingests of a loopback site."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pipeline.definitions import defs
from pipeline.defs.automation import (
    build_refresh_schedule,
    context_sets_after_source_removal,
    context_sets_automation,
    knowledge_base_refresh,
    queries_file_sensor,
    source_freshness_check,
    source_partitions_sensor,
)
from pipeline.defs.partitions import register_sources
from pipeline.embedding import MODEL_NAME
from pipeline.settings import SettingError
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.crawl.site_server import Reply
from tests.support import make_resources
from tests.tiny_site import QUERIES, tiny_site_on_a_persistent_instance

REPO = Path(__file__).resolve().parents[1]
DOWNSTREAM = ["retrieved_candidates", "reranked_candidates", "ranked_context_sets", "answers"]
QUERIES_ASSET = dg.AssetSelection.assets("queries")


@pytest.fixture
def site(tmp_path):
    with tiny_site_on_a_persistent_instance(tmp_path) as site:
        yield site


def queue_ingest_run(site, source: str) -> dg.DagsterRun:
    """A run created but not started yet, with its planned materialisations, as a launch leaves it."""
    job = site.definitions().resolve_job_def("ingest_source")
    return site.instance.create_run_for_job(
        job_def=job, tags={"dagster/partition": source}, status=dg.DagsterRunStatus.NOT_STARTED
    )


def apply_partition_requests(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a result's partition requests."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def registered(site) -> list[str]:
    return sorted(site.instance.get_dynamic_partitions("sources"))


# -- the daily refresh -------------------------------------------------------------------------


def test_refresh_schedule_queues_every_registered_source_that_is_not_busy(site):
    # With the repository, run requests are resolved against the job's partitions as the daemon does.
    context = dg.build_schedule_context(
        instance=site.instance,
        scheduled_execution_time=datetime(2026, 3, 2, 4, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    nothing = knowledge_base_refresh.evaluate_tick(context)
    assert nothing.run_requests == [] and "no sources registered" in nothing.skip_message

    register_sources(site.instance, ["alpha", "beta"])
    queue_ingest_run(site, "beta")  # e.g. yesterday's refresh of a slow site, still waiting
    tick = knowledge_base_refresh.evaluate_tick(context)
    assert [(request.partition_key, request.run_key) for request in tick.run_requests] == [("alpha", "alpha")]

    assert knowledge_base_refresh.job_name == "ingest_source"
    assert (knowledge_base_refresh.cron_schedule, knowledge_base_refresh.execution_timezone) == ("0 4 * * *", "UTC")
    assert knowledge_base_refresh.default_status == dg.DefaultScheduleStatus.RUNNING


def test_refresh_time_is_configurable_and_bad_values_name_the_variable():
    schedule = build_refresh_schedule("30 2 * * 1-5", "Europe/Berlin")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * 1-5", "Europe/Berlin")
    with pytest.raises(SettingError, match=r"PIPELINE_REFRESH_CRON must be .* got 'every day at 4'"):
        build_refresh_schedule("every day at 4", "UTC")
    with pytest.raises(SettingError, match=r"PIPELINE_REFRESH_TIMEZONE must be an IANA time zone.*'Mars/Olympus'"):
        build_refresh_schedule("0 4 * * *", "Mars/Olympus")


def test_a_bad_cron_in_the_environment_stops_the_code_location_with_the_variable_named():
    completed = subprocess.run(
        [sys.executable, "-c", "import pipeline.definitions"],
        cwd=REPO,
        env={**os.environ, "PIPELINE_REFRESH_CRON": "61 4 * * *"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "PIPELINE_REFRESH_CRON must be a cron expression of five fields" in completed.stderr
    assert "'61 4 * * *'" in completed.stderr


def test_context_sets_run_once_after_the_last_source_settles(site):
    instance = site.instance
    register_sources(instance, ["alpha", "beta"])

    def evaluate(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result, {key: result.get_num_requested(dg.AssetKey(key)) for key in [*DOWNSTREAM, "queries"]}

    # A fresh deployment reads the queries once; with nothing indexed yet retrieval does not follow.
    first, requested = evaluate(None)
    assert requested == {**dict.fromkeys(DOWNSTREAM, 0), "queries": 1}
    site.run.downstream(selection=QUERIES_ASSET)
    read, requested = evaluate(first.cursor)
    assert read.total_requested == 0

    # The refresh queued both sources; alpha finished, beta still waits in the queue.
    site.run.ingest("alpha")
    beta_run = queue_ingest_run(site, "beta")
    waiting, requested = evaluate(read.cursor)
    assert waiting.total_requested == 0

    instance.report_run_canceled(beta_run)
    site.run.ingest("beta")
    ready, requested = evaluate(waiting.cursor)
    # One run of the three, not one per source; the queries are not re-read for an index change.
    assert requested == {**dict.fromkeys(DOWNSTREAM, 1), "queries": 0}

    settled, _ = evaluate(ready.cursor)
    assert settled.total_requested == 0
    # A run that already builds the context sets (what queries_file_sensor launches) triggers nothing more.
    site.run.downstream()
    after_build, _ = evaluate(settled.cursor)
    assert after_build.total_requested == 0
    # A later refresh of a single source triggers them again.
    site.run.ingest("alpha")
    refreshed, requested = evaluate(after_build.cursor)
    assert requested == {**dict.fromkeys(DOWNSTREAM, 1), "queries": 0}


def test_queries_that_failed_to_load_are_not_requested_again_every_tick(site):
    site.queries_path.write_text("queries: [\n")
    first = dg.evaluate_automation_conditions(defs=defs, instance=site.instance)
    assert first.get_num_requested(dg.AssetKey("queries")) == 1
    failed = site.run.downstream(selection=QUERIES_ASSET, raise_on_error=False)
    assert not failed.success
    after_failure = dg.evaluate_automation_conditions(defs=defs, instance=site.instance, cursor=first.cursor)
    assert after_failure.total_requested == 0


def test_automation_and_schedules_run_by_default():
    assert context_sets_automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert context_sets_automation.asset_selection.resolve(defs.get_repository_def().asset_graph) == {
        dg.AssetKey(key) for key in ["queries", *DOWNSTREAM]
    }
    assert source_freshness_check.default_status == dg.DefaultScheduleStatus.RUNNING
    for sensor in (source_partitions_sensor, queries_file_sensor, context_sets_after_source_removal):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name


# -- sources file ------------------------------------------------------------------------------


def evaluate_partitions_sensor(site):
    resources = {"files": site.resources["files"], "state_store": site.resources["state_store"]}
    with dg.build_sensor_context(instance=site.instance, resources=resources) as context:
        return source_partitions_sensor(context)


def test_partitions_follow_the_sources_file_and_a_bad_file_changes_nothing(site):
    added = evaluate_partitions_sensor(site)
    assert [(r.job_name, r.partition_key) for r in added.run_requests] == [
        ("ingest_source", "alpha"),
        ("ingest_source", "beta"),
    ]
    apply_partition_requests(site.instance, added)
    assert registered(site) == ["alpha", "beta"]
    assert "2 sources listed, every one registered" in evaluate_partitions_sensor(site).skip_message

    for broken, expected in [
        ("sources: [\n", "sources file unusable"),
        ("sources:\n  - {name: Bad Name, start_urls: ['https://x.example/']}\n", "field 'name'"),
        ("sources: []\n", "refusing to remove all 2 registered sources"),
    ]:
        site.sources_path.write_text(broken)
        skipped = evaluate_partitions_sensor(site)
        assert isinstance(skipped, dg.SkipReason) and expected in skipped.skip_message
        assert registered(site) == ["alpha", "beta"]
    site.sources_path.unlink()
    assert "does not exist" in evaluate_partitions_sensor(site).skip_message
    assert registered(site) == ["alpha", "beta"]


def test_a_purged_source_leaves_the_indexes_and_the_context_sets(site):
    instance = site.instance
    site.run.ingest("alpha")
    site.run.ingest("beta")
    store = StateStore(sqlite_url(site.data_dir))
    beta_chunks = store.chunks.ids("beta")
    alpha_chunks = store.chunks.ids("alpha")
    assert beta_chunks and alpha_chunks

    site.list_sources("alpha")
    orphaned = evaluate_partitions_sensor(site)
    assert "remove_sources" not in {request.job_name for request in orphaned.run_requests}
    apply_partition_requests(instance, orphaned)
    assert registered(site) == ["alpha"]
    # Registered no more, but still retrievable until it is purged (tests/test_orphaned_sources.py).
    assert store.chunks.ids("beta") == beta_chunks

    definitions = site.definitions()
    result = definitions.resolve_job_def("remove_sources").execute_in_process(
        run_config={"ops": {"purge_removed_sources": {"config": {"sources": ["beta"]}}}}, instance=instance
    )
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["chunks_deleted"].value == len(beta_chunks)
    assert store.chunks.ids("beta") == set() and store.pages.count("beta") == store.pages.document_count("beta") == 0
    vectors = VectorIndex(ChromaConnection(data_dir=str(site.data_dir)), MODEL_NAME)
    assert vectors.ids("beta") == set() and vectors.ids("alpha") == alpha_chunks
    lexical = LexicalIndex(site.data_dir)
    assert lexical.ids() == alpha_chunks

    # The published context sets follow once the removal succeeded.
    sensor_context = dg.build_run_status_sensor_context(
        sensor_name=context_sets_after_source_removal.name,
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    rebuild = context_sets_after_source_removal(sensor_context)
    assert rebuild.run_key == result.run_id
    rebuilt = definitions.resolve_job_def("build_context_sets").execute_in_process(instance=instance)
    assert rebuilt.success
    urls = {p["url"] for context_set in store.context_sets.latest().values() for p in context_set.passages}
    assert urls and not any("/beta/" in url for url in urls)
    store.dispose()


def test_a_purge_keeps_a_source_that_is_listed_again(site):
    site.run.ingest("alpha")
    store = StateStore(sqlite_url(site.data_dir))
    chunks = store.chunks.ids("alpha")
    result = (
        site.definitions()
        .resolve_job_def("remove_sources")
        .execute_in_process(
            run_config={"ops": {"purge_removed_sources": {"config": {"sources": ["alpha"]}}}}, instance=site.instance
        )
    )
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["sources_kept"].value == "alpha"
    assert store.chunks.ids("alpha") == chunks
    store.dispose()


# -- queries file ------------------------------------------------------------------------------


def evaluate_queries_sensor(site, cursor, resources=None):
    resources = resources or site.resources
    with dg.build_sensor_context(
        instance=site.instance,
        cursor=cursor,
        resources={"files": resources["files"], "state_store": resources["state_store"]},
    ) as context:
        return queries_file_sensor(context)


def test_queries_sensor_waits_for_the_first_ingest(site):
    waiting = evaluate_queries_sensor(site, None)
    assert isinstance(waiting, dg.SkipReason)
    assert "2 queries, but no chunks ingested yet" in waiting.skip_message
    site.run.ingest("alpha")
    ready = evaluate_queries_sensor(site, None)
    assert len(ready.run_requests) == 1


def test_queries_sensor_rebuilds_context_sets_on_change_without_recrawling(site):
    site.run.ingest("alpha")
    first = evaluate_queries_sensor(site, None)
    [request] = first.run_requests
    cursor = first.cursor
    assert isinstance(evaluate_queries_sensor(site, cursor), dg.SkipReason)

    # Same questions, different layout and comments: nothing to do.
    site.queries_path.write_text(
        "# support bot questions\nqueries:\n"
        + "".join(f"- id: {key}\n  query: '{text}'\n" for key, text in QUERIES.items())
    )
    assert "2 queries, unchanged" in evaluate_queries_sensor(site, cursor).skip_message

    site.queries_path.write_text("queries:\n  - {id: q1, query: 'deploy'}\n  - {id: q1, query: 'twice'}\n")
    broken = evaluate_queries_sensor(site, cursor)
    assert isinstance(broken, dg.SkipReason)
    assert (
        "queries file unusable, nothing launched" in broken.skip_message
        and "duplicate query id 'q1'" in broken.skip_message
    )

    site.write_queries({**QUERIES, "q3": "How do I tune the token budget?"})
    changed = evaluate_queries_sensor(site, cursor)
    assert len(changed.run_requests) == 1 and changed.cursor != cursor

    requests_before = len(site.server.log)
    result = site.definitions().resolve_job_def(queries_file_sensor.job_name).execute_in_process(instance=site.instance)
    assert result.success
    assert len(site.server.log) == requests_before  # nothing crawled
    store = StateStore(sqlite_url(site.data_dir))
    assert set(store.context_sets.latest()) == {"q1", "q2", "q3"}
    store.dispose()
    # A new deployment (no cursor) whose stored queries already match the file launches nothing.
    fresh = evaluate_queries_sensor(site, None)
    assert fresh.run_requests == [] and fresh.cursor == changed.cursor


def test_queries_sensor_reads_a_url(site):
    route = "/raw/queries.yaml?token=t0ps3cret"
    site.server.routes[route] = Reply(body="queries:\n  - {id: q1, query: 'How do I deploy?'}\n")
    site.run.ingest("alpha")
    resources = make_resources(site.data_dir, site.sources_path, site.server.url(route), site.rerank.url)
    first = evaluate_queries_sensor(site, None, resources)
    assert len(first.run_requests) == 1
    site.server.routes[route] = Reply(503, "maintenance")
    unavailable = evaluate_queries_sensor(site, first.cursor, resources)
    assert "queries file unusable" in unavailable.skip_message and "HTTP 503" in unavailable.skip_message
    assert "t0ps3cret" not in unavailable.skip_message
    site.server.routes[route] = Reply(body="queries:\n  - {id: q1, query: 'How do I deploy on Heroku?'}\n")
    assert len(evaluate_queries_sensor(site, first.cursor, resources).run_requests) == 1
