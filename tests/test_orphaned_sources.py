"""Sources dropped from the sources file: orphaned with their data kept, listed by a WARN check, purged
after the grace period or when a person names them, and taken over by a renamed source without any
page fetched in full or chunk embedded again. Real instance, real sensor ticks, real runs of a loopback site."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from pipeline.defs.automation import check_sources_job, source_partitions_sensor
from pipeline.defs.jobs import ingest_source_job
from pipeline.defs.removal import remove_sources_job
from pipeline.embedding import MODEL_NAME
from pipeline.source_sync import source_changes
from pipeline.store.lexical import LexicalIndex
from pipeline.store.orphans import (
    adopt_pages,
    mark_orphaned,
    orphaned_page_urls,
    orphaned_pages,
    orphaned_since,
    release_orphans,
)
from pipeline.store.records import StoredChunk
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.support import ALL_ASSETS, materialization_metadata
from tests.test_automation import apply_partition_requests, queue_ingest_run, registered
from tests.tiny_site import page_html, source_entry, tiny_site_on_a_persistent_instance, write_yaml

GRACE = timedelta(hours=72)  # PIPELINE_SOURCE_REMOVAL_GRACE_HOURS default
NOW = datetime(2026, 3, 2, 4, tzinfo=UTC)


@pytest.fixture
def site(tmp_path):
    with tiny_site_on_a_persistent_instance(tmp_path) as site:
        # Validators on every page, as a static server sends them: a refresh can answer 304.
        for path, reply in site.server.routes.items():
            reply.headers["ETag"] = f'"{path}-v1"'
        yield site


@pytest.fixture
def store(site):
    state = StateStore(sqlite_url(site.data_dir))
    yield state
    state.dispose()


def tick(site) -> dg.SensorResult | dg.SkipReason:
    resources = site.resources
    with dg.build_sensor_context(
        instance=site.instance, resources={"files": resources["files"], "state_store": resources["state_store"]}
    ) as context:
        result = source_partitions_sensor(context)
    if isinstance(result, dg.SensorResult):
        apply_partition_requests(site.instance, result)
    return result


def requested(result) -> list[tuple[str, str | None]]:
    return [(request.job_name, request.partition_key) for request in getattr(result, "run_requests", [])]


def run(site, job: str, run_config=None) -> dg.ExecuteInProcessResult:
    definitions = dg.Definitions(
        assets=ALL_ASSETS, jobs=[ingest_source_job, remove_sources_job, check_sources_job], resources=site.resources
    )
    return definitions.resolve_job_def(job).execute_in_process(run_config=run_config, instance=site.instance)


def orphan_check(result: dg.ExecuteInProcessResult) -> tuple[dg.AssetCheckEvaluation, dict]:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_orphaned_sources"]
    return evaluation, {key: value.value for key, value in evaluation.metadata.items()}


def age_orphans(store: StateStore, by: timedelta) -> None:
    """Move every orphaning back in time, as if the grace period had passed."""
    table = sa.table(
        "pipeline_orphaned_sources", sa.column("source"), sa.column("orphaned_at", sa.DateTime(timezone=True))
    )
    with store.transaction() as connection:
        for source, at in connection.execute(sa.select(table.c.source, table.c.orphaned_at)).all():
            connection.execute(sa.update(table).where(table.c.source == source).values(orphaned_at=at - by))


def indexed(site) -> tuple[VectorIndex, LexicalIndex]:
    return VectorIndex(ChromaConnection(data_dir=str(site.data_dir)), MODEL_NAME), LexicalIndex(site.data_dir)


def statuses_since(site, start: int, prefix: str) -> list[int]:
    return [seen.status for seen in site.server.log[start:] if seen.path.startswith(prefix)]


def test_a_truncated_sources_file_orphans_the_dropped_source_and_the_purge_waits_for_the_grace_period(site, store):
    site.run.ingest("alpha")
    site.run.ingest("beta")
    alpha_chunks, beta_chunks = store.chunks.ids("alpha"), store.chunks.ids("beta")
    vectors, lexical = indexed(site)

    site.list_sources("alpha")  # the file was cut off after its first entry
    beta_run = queue_ingest_run(site, "beta")
    assert "orphaning beta waits" in tick(site).skip_message and registered(site) == ["alpha", "beta"]
    site.instance.report_run_canceled(beta_run)

    dropped = tick(site)
    # Unregistered (never refreshed again), the check job launched, nothing purged.
    assert requested(dropped) == [("check_sources", None)] and registered(site) == ["alpha"]
    assert store.chunks.ids("beta") == beta_chunks and store.pages.count("beta") == 2
    assert vectors.ids("beta") == beta_chunks and lexical.ids("beta") == beta_chunks

    warning, details = orphan_check(run(site, "check_sources"))
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert details["orphaned_sources"] == 1 and details["pages_awaiting_removal"] == 2 and details["grace_hours"] == 72
    assert "| beta | 2 |" in details["orphans"] and "beta (2 pages, purged after" in warning.description

    # Within the grace period every tick leaves it alone.
    age_orphans(store, GRACE - timedelta(minutes=5))
    assert "every one registered" in tick(site).skip_message
    assert store.chunks.ids("beta") == beta_chunks

    age_orphans(store, timedelta(minutes=10))
    expired = tick(site)
    [purge] = expired.run_requests
    assert purge.job_name == "remove_sources" and purge.run_key.startswith("purge:beta:")
    removal = run(site, "remove_sources", purge.run_config)
    assert removal.success
    assert store.chunks.ids("beta") == set() and store.pages.count("beta") == store.pages.document_count("beta") == 0
    assert vectors.ids("beta") == set() and vectors.ids("alpha") == alpha_chunks and lexical.ids() == alpha_chunks
    assert orphan_check(run(site, "check_sources"))[0].passed
    assert "every one registered" in tick(site).skip_message


def test_a_source_listed_again_before_expiry_keeps_everything(site, store):
    site.run.ingest("alpha")
    site.run.ingest("beta")
    beta_chunks = store.chunks.ids("beta")
    site.list_sources("alpha")
    assert requested(tick(site)) == [("check_sources", None)]  # no purge launched
    assert registered(site) == ["alpha"]

    site.list_sources("alpha", "beta")  # the file is whole again
    back = tick(site)
    assert requested(back) == [("ingest_source", "beta"), ("check_sources", None)] and registered(site) == [
        "alpha",
        "beta",
    ]
    start = len(site.server.log)
    refresh = site.run.ingest("beta")
    assert set(statuses_since(site, start, "/beta/")) == {304}
    assert materialization_metadata(refresh, "vector_index")["chunks_embedded"] == 0
    assert store.chunks.ids("beta") == beta_chunks
    assert orphan_check(refresh)[0].passed
    age_orphans(store, 2 * GRACE)
    assert "every one registered" in tick(site).skip_message  # no purge: it is no longer orphaned


def test_remove_sources_naming_an_orphan_purges_it_now(site, store):
    site.run.ingest("alpha")
    site.run.ingest("beta")
    site.list_sources("alpha")
    tick(site)
    purge = run(site, "remove_sources", {"ops": {"purge_removed_sources": {"config": {"sources": ["beta"]}}}})
    assert purge.success
    assert store.chunks.ids("beta") == set() and store.pages.count("beta") == 0
    vectors, lexical = indexed(site)
    assert vectors.ids("beta") == set() and lexical.ids() == store.chunks.ids("alpha") != set()
    assert orphan_check(run(site, "check_sources"))[0].passed


def test_a_renamed_source_takes_over_pages_without_fetching_or_embedding_and_survives_the_orphans_purge(site, store):
    site.run.ingest("alpha")
    site.run.ingest("beta")
    beta_chunks = store.chunks.ids("beta")
    assert len(beta_chunks) >= 2

    # beta is renamed: the same site under a new name.
    renamed = {**source_entry(site.server, "beta"), "name": "beta-handbook"}
    write_yaml(site.sources_path, {"sources": [source_entry(site.server, "alpha"), renamed]})
    change = tick(site)
    assert requested(change) == [("ingest_source", "beta-handbook"), ("check_sources", None)]
    assert registered(site) == ["alpha", "beta-handbook"]

    start = len(site.server.log)
    first = site.run.ingest("beta-handbook")
    assert set(statuses_since(site, start, "/beta/")) == {304}  # nothing fetched in full
    crawled = materialization_metadata(first, "crawled_pages")
    assert crawled["pages_taken_over"] == 2 and crawled["pages_new"] == 0 and crawled["pages_deleted"] == 0
    index = materialization_metadata(first, "vector_index")
    assert index["chunks_embedded"] == 0 and index["vectors_deleted"] == 0
    assert store.chunks.ids("beta-handbook") == beta_chunks and store.chunks.ids("beta") == set()
    assert store.pages.count("beta") == store.pages.document_count("beta") == 0
    vectors, lexical = indexed(site)
    assert vectors.ids("beta-handbook") == beta_chunks and vectors.ids("beta") == set()
    assert lexical.ids("beta-handbook") == beta_chunks
    # beta holds nothing any more: the warning does not stand for an empty orphan.
    check, details = orphan_check(first)
    assert check.passed and details["orphaned_sources"] == 1
    assert {e.check_name: e.passed for e in first.get_asset_check_evaluations()}["indexes_match_stored_chunks"]

    age_orphans(store, GRACE + timedelta(minutes=1))
    [purge] = tick(site).run_requests
    assert purge.run_config["ops"]["purge_removed_sources"]["config"]["sources"] == ["beta"]
    assert run(site, "remove_sources", purge.run_config).success
    assert store.chunks.ids("beta-handbook") == beta_chunks and store.pages.count("beta-handbook") == 2
    assert vectors.ids("beta-handbook") == beta_chunks and lexical.ids("beta-handbook") == beta_chunks

    start = len(site.server.log)
    again = site.run.ingest("beta-handbook")
    assert set(statuses_since(site, start, "/beta/")) == {304}
    assert materialization_metadata(again, "vector_index")["chunks_embedded"] == 0


def test_a_page_changed_while_its_source_is_renamed_leaves_no_chunk_of_its_old_text(site, store):
    site.run.ingest("alpha")
    site.run.ingest("beta")
    old_chunks = store.chunks.ids("beta")
    renamed = {**source_entry(site.server, "beta"), "name": "beta-handbook"}
    write_yaml(site.sources_path, {"sources": [source_entry(site.server, "alpha"), renamed]})
    tick(site)
    site.server.page(
        "/beta/keys.html", page_html("Beta keys", "Revoked keys now answer 403.", []), headers={"ETag": '"keys-v2"'}
    )

    result = site.run.ingest("beta-handbook")

    vectors, lexical = indexed(site)
    stored = store.chunks.ids()
    assert (
        stored & old_chunks and stored != store.chunks.ids("alpha") | old_chunks
    )  # kept one page, rechunked the other
    assert vectors.ids() == stored and lexical.ids() == stored
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["indexes_match_stored_chunks"]


# -- the plain parts ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_store(request, tmp_path):
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    state = StateStore(url)
    yield state
    state.dispose()


def save_page_with_chunk(store: StateStore, url: str, source: str) -> None:
    store.pages.save(
        url=url,
        source=source,
        final_url=url,
        status=200,
        content_type="text/html",
        etag=f'"{url}"',
        last_modified=None,
        content_hash=f"hash-{url}",
        html="<p>x</p>",
        fetched_at=NOW,
        links=["http://d/a"],
    )
    store.pages.save_document(
        url=url,
        source=source,
        page_hash=f"hash-{url}",
        extractor_version="v1",
        title="T",
        sections=[],
        content_hash="d",
    )
    chunk = StoredChunk(f"chunk-{url}", source, url, "T", ("T",), "text", "T\ntext", 2, 0)
    store.chunks.replace(source=source, url=url, new_chunks=[chunk], chunked_key="k")


def test_orphans_are_recorded_once_and_only_their_pages_change_hands(bare_store):
    store = bare_store
    save_page_with_chunk(store, "http://d/old/a", "old")
    save_page_with_chunk(store, "http://d/old/b", "old")
    save_page_with_chunk(store, "http://d/live/c", "live")
    mark_orphaned(store, ["old"], NOW)
    mark_orphaned(store, ["old"], NOW + timedelta(hours=5))  # a later tick keeps the first time
    assert orphaned_since(store) == {"old": NOW}

    in_a = orphaned_pages(store, lambda url: url.endswith("/a"))
    assert list(in_a) == ["http://d/old/a"] and in_a["http://d/old/a"].etag == '"http://d/old/a"'
    assert orphaned_page_urls(store) == {"http://d/old/a", "http://d/old/b"}

    # Only an orphan's pages are taken: a listed source keeps its own.
    assert adopt_pages(store, "new", ["http://d/old/a", "http://d/live/c"]) == 1
    assert set(store.pages.known("new")) == {"http://d/old/a"} and store.pages.owner("http://d/live/c") == "live"
    assert store.chunks.sources() == {
        "chunk-http://d/old/a": "new",
        "chunk-http://d/old/b": "old",
        "chunk-http://d/live/c": "live",
    }
    assert store.pages.document_count("new") == store.pages.document_count("old") == 1

    release_orphans(store, ["old"])
    assert orphaned_since(store) == {} and adopt_pages(store, "new", ["http://d/old/b"]) == 0


def test_source_changes_orphan_return_wait_and_expire():
    orphaned = {"gone": NOW - timedelta(hours=73), "fresh": NOW - timedelta(hours=1), "back": NOW - timedelta(hours=80)}
    changes = source_changes(
        ["alpha", "back", "new"], ["alpha", "dropped", "running"], orphaned, busy={"running"}, now=NOW, grace=GRACE
    )
    assert changes.added == ("back", "new") and changes.returned == ("back",)
    assert changes.orphaned == ("dropped",) and changes.waiting == ("running",) and changes.expired == ("gone",)
    # A leftover run of an expired orphan (launched by hand) holds its purge back.
    busy = source_changes(["alpha"], ["alpha"], {"gone": orphaned["gone"]}, busy={"gone"}, now=NOW, grace=GRACE)
    assert busy.expired == () and busy.unchanged
    assert source_changes(["alpha"], ["alpha"], {}, busy=(), now=NOW, grace=GRACE).unchanged
