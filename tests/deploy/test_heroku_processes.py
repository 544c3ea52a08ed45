"""The Procfile on a local "Heroku": release migrates, web serves the UI behind auth, worker runs the daemon.

The tests run in order against one app (tests/deploy/conftest.py): a fresh deploy crawls its
source on its own; a run launched through the web dyno's API executes on the worker and writes
context sets to PostgreSQL; a worker restart that wipes its disk rebuilds the index without
re-crawling, re-embedding or billing again.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from pipeline.store.migrate import current_revisions, head_revisions
from tests.deploy.heroku_app import DB_PASSWORD, REPO, RERANK_KEY, WEB_PASSWORD, HerokuApp, materialization_metadata


def _run_event_types(instance: dg.DagsterInstance, run_id: str) -> set[dg.DagsterEventType]:
    return {entry.dagster_event.event_type for entry in instance.all_logs(run_id) if entry.dagster_event}


def _first_ingest_run(app: HerokuApp, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in app.runs():
            if run["jobName"] == "ingest_source" and run["status"] in ("SUCCESS", "FAILURE"):
                return run["runId"]
        time.sleep(2)
    raise AssertionError(f"no ingest run finished:\n{app.worker.output()[-4000:]}")


def test_release_created_dagster_and_pipeline_tables(heroku_app: HerokuApp):
    engine = sa.create_engine(heroku_app.database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            pipeline_revisions = current_revisions(connection)
            dagster_revision = connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()
    assert {"runs", "event_logs", "jobs", "alembic_version"} <= tables
    assert {"pipeline_pages", "pipeline_chunks", "pipeline_context_sets", "pipeline_rerank_cache"} <= tables
    # Each keeps its own migration version: the pipeline's is at its newest, Dagster's is Dagster's.
    assert pipeline_revisions == head_revisions()
    assert dagster_revision not in head_revisions()
    assert f"pipeline schema at revision {head_revisions()[0]}" in heroku_app.release.output()


def test_web_requires_credentials_except_for_health(heroku_app: HerokuApp):
    for path in ("/", "/graphql", "/assets"):
        assert httpx.get(heroku_app.url + path).status_code == 401, path
        assert httpx.get(heroku_app.url + path, auth=("admin", "guess")).status_code == 401, path
    query = {"query": "{ version }"}
    assert httpx.post(heroku_app.url + "/graphql", json=query).status_code == 401
    assert httpx.get(heroku_app.url + "/health").status_code == 200
    assert httpx.get(heroku_app.url + "/", auth=heroku_app.auth).status_code == 200


def test_web_answers_429_to_the_router_hop_that_keeps_guessing(heroku_app: HerokuApp):
    """On a dyno the client is the last X-Forwarded-For hop (the one Heroku's router appends)."""

    def get(last_hop: str, auth: tuple[str, str]) -> httpx.Response:
        headers = {"X-Forwarded-For": f"10.0.0.1, {last_hop}", "X-Forwarded-Proto": "https"}
        return httpx.get(heroku_app.url + "/", auth=auth, headers=headers)

    assert {get("192.0.2.50", ("admin", f"guess{n}")).status_code for n in range(10)} == {401}
    blocked = get("192.0.2.50", heroku_app.auth)
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 300
    assert get("192.0.2.51", heroku_app.auth).status_code == 200


def test_fresh_deploy_crawls_its_source_on_the_worker_by_itself(heroku_app: HerokuApp):
    run_id = _first_ingest_run(heroku_app)
    with heroku_app.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, heroku_app.worker.output()[-4000:]
        assert run.tags["dagster/partition"] == "user-guide"
        crawl = materialization_metadata(instance, run_id, "crawled_pages")
        index = materialization_metadata(instance, run_id, "vector_index")
    assert crawl["pages_new"] > 20
    assert index["chunks_embedded"] > 100


def test_a_run_launched_through_the_web_dyno_executes_on_the_worker_and_lands_in_postgres(heroku_app: HerokuApp):
    _first_ingest_run(heroku_app)
    run_id = heroku_app.launch_run("build_context_sets")
    assert heroku_app.wait_for_run(run_id) == "SUCCESS", heroku_app.worker.output()[-4000:]
    with heroku_app.instance() as instance:
        # The web dyno's queued run coordinator only enqueues; the worker's daemon launched it.
        assert dg.DagsterEventType.RUN_ENQUEUED in _run_event_types(instance, run_id)
        rerank = materialization_metadata(instance, run_id, "reranked_candidates")
    # Every query reranked, by a call or from the cache of the automation's run after the ingest.
    assert rerank["queries_reranked"] == rerank["queries"] > 0
    assert rerank["requests"] + rerank["cache_hits"] >= rerank["queries"]
    assert "Launched 1 runs" in heroku_app.worker.output()
    engine = sa.create_engine(heroku_app.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT query_id, reranked, passages FROM pipeline_context_sets WHERE run_id = :run"),
                {"run": run_id},
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == rerank["queries"] > 0
    assert all(row.reranked and row.passages for row in rows)


def test_worker_restart_on_a_wiped_disk_rebuilds_without_recrawling_reembedding_or_billing(heroku_app: HerokuApp):
    heroku_app.worker.stop()
    shutil.rmtree(heroku_app.worker.disk)
    heroku_app.worker.start()
    ingest = heroku_app.launch_run("ingest_source", partition="user-guide")
    assert heroku_app.wait_for_run(ingest) == "SUCCESS", heroku_app.worker.output()[-4000:]
    context = heroku_app.launch_run("build_context_sets")
    assert heroku_app.wait_for_run(context) == "SUCCESS", heroku_app.worker.output()[-4000:]
    with heroku_app.instance() as instance:
        crawl = materialization_metadata(instance, ingest, "crawled_pages")
        index = materialization_metadata(instance, ingest, "vector_index")
        rerank = materialization_metadata(instance, context, "reranked_candidates")
    assert crawl["pages_new"] == crawl["pages_changed"] == 0
    assert crawl["pages_not_modified"] > 20
    assert index["chunks_embedded"] == 0
    assert index["vectors_restored"] == index["vectors_total"] > 100
    assert rerank["billed_search_units"] == 0


def test_no_secret_reaches_the_logs_or_the_event_log(heroku_app: HerokuApp):
    secrets = (RERANK_KEY, WEB_PASSWORD, DB_PASSWORD)
    logs = heroku_app.release.output() + heroku_app.web.output() + heroku_app.worker.output()
    assert "Started Dagster code server" in logs or "starting the Dagster daemon" in logs
    with heroku_app.instance() as instance:
        events = "".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    dagster_yaml = (heroku_app.worker.disk / "data" / "dagster_home" / "dagster.yaml").read_text()
    for secret in secrets:
        assert secret not in logs
        assert secret not in events
        assert secret not in dagster_yaml


@pytest.mark.parametrize(
    ("process", "unset", "message"),
    [("web", "WEB_PASSWORD", "WEB_PASSWORD is not set"), ("worker", "DATABASE_URL", "DATABASE_URL is not set")],
)
def test_processes_refuse_to_start_on_heroku_without_their_config_vars(heroku_app: HerokuApp, process, unset, message):
    environment = {**heroku_app.web.environment(), "DYNO": f"{process}.1"}
    environment.pop(unset)
    result = subprocess.run(
        ["pipeline", process], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert message in result.stderr
