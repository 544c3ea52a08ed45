"""Incremental ingestion through the real assets: pages change, vanish and appear between runs.

After every refresh the Chroma collection must hold exactly what a cold ingest of the site as it
is now would hold (the same IDs, texts, metadata and vectors), and only new chunks are embedded.
Runs on both state stores: SQLite, and PostgreSQL under the ``postgres://`` URL Heroku hands out.
A run killed with SIGKILL while it embeds is finished by the next run without duplicates or
orphans, and without embedding again what it had saved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.defs import resource_handles
from pipeline.embedding import MODEL_NAME, MiniLMEmbedder
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.crawl.site_server import Reply, SiteServer
from tests.support import (
    PipelineRun,
    forget_chroma_clients,
    kill_midway,
    make_resources,
    materialization_metadata,
    quiet_dagster_home,
    run_worker,
    worker_command,
    worker_env,
    write_sources,
)

SOURCE = "docs"
# Ingest never calls the rerank endpoint; nothing listens here.
UNUSED_RERANK_URL = "http://127.0.0.1:9"


def section(heading: str, topic: str, sentences: int = 12) -> str:
    """A section long enough to be a chunk of its own, its words distinct per topic."""
    text = " ".join(
        f"The {topic} setting number {n} controls how {topic} behaves under load." for n in range(sentences)
    )
    return f"<h2>{heading}</h2><p>{text}</p>"


def page(title: str, *sections: str, links: tuple[str, ...] = ()) -> str:
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    body = f"<h1>{title}</h1>{''.join(sections)}<ul>{anchors}</ul>"
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def serve(server: SiteServer, path: str, html: str) -> None:
    """Serve ``html`` with an ETag of its content, so an unchanged page answers 304."""
    server.page(path, html, headers={"ETag": f'"{hashlib.sha256(html.encode()).hexdigest()[:16]}"'})


def build_site(server: SiteServer) -> None:
    serve(
        server,
        "/docs/index.html",
        page("Handbook", section("Start", "onboarding", 3), links=("a.html", "b.html", "c.html")),
    )
    serve(
        server,
        "/docs/a.html",
        page(
            "Replication", section("Streaming", "streaming"), section("Slots", "slot"), section("Failover", "failover")
        ),
    )
    serve(server, "/docs/b.html", page("Backups", section("Dumps", "dump")))
    serve(server, "/docs/c.html", page("Vacuum", section("Autovacuum", "autovacuum")))


@dataclass(frozen=True)
class Stored:
    document: str
    metadata: dict
    embedding: np.ndarray


def chroma_contents(data_dir: Path) -> dict[str, Stored]:
    # Chroma caches one client per path and process; another process (the worker) may have written since.
    forget_chroma_clients()
    collection = VectorIndex(ChromaConnection(data_dir=str(data_dir)), MODEL_NAME).collection
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        chunk_id: Stored(document, metadata, np.asarray(embedding))
        for chunk_id, document, metadata, embedding in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        )
    }


def assert_same_contents(actual: dict[str, Stored], expected: dict[str, Stored]) -> None:
    assert sorted(actual) == sorted(expected)
    for chunk_id, stored in expected.items():
        assert actual[chunk_id].document == stored.document, chunk_id
        assert actual[chunk_id].metadata == stored.metadata, chunk_id
        # Batches differ between an incremental and a cold run; vectors agree to float precision.
        np.testing.assert_allclose(actual[chunk_id].embedding, stored.embedding, atol=1e-5)


def urls_of(contents: dict[str, Stored]) -> set[str]:
    return {stored.metadata["url"] for stored in contents.values()}


@dataclass
class Site:
    server: SiteServer
    tmp_path: Path
    database_url: str | None

    def source(self, **overrides: object) -> dict:
        return {
            "name": SOURCE,
            "start_urls": [self.server.url("/docs/index.html")],
            "allow_private_hosts": True,
            "discover_sitemaps": False,
            **overrides,
        }

    def ingest(self, data_dir: Path, database_url: str | None, **source: object) -> dict[str, dict]:
        data_dir.mkdir(exist_ok=True)
        sources = write_sources(self.tmp_path / f"sources-{data_dir.name}.yaml", [self.source(**source)])
        resources = make_resources(
            data_dir, sources, self.tmp_path / "queries.yaml", UNUSED_RERANK_URL, database_url=database_url
        )
        with dg.DagsterInstance.ephemeral() as instance:
            result = PipelineRun(resources, instance).ingest(SOURCE)
        assert result.success
        # vector_index dropped the ONNX session before the rest of the run, where the worker's memory peaks.
        # Only this run's handle counts: other tests in the process leave theirs (other settings) loaded.
        embedder = resources["embedder"]
        minilm = resource_handles._SHARED[("embedder", embedder.batch_size, embedder.threads)]
        assert isinstance(minilm, MiniLMEmbedder)
        assert not minilm.session_loaded
        return {name: materialization_metadata(result, name) for name in ("crawled_pages", "vector_index")}

    def refresh(self, **source: object) -> dict[str, dict]:
        """Ingest into the long-lived data directory and state store."""
        return self.ingest(self.tmp_path / "data", self.database_url, **source)

    def cold(self, name: str, **source: object) -> dict[str, Stored]:
        """Chroma after a cold ingest of the site as it is now, into a new data directory."""
        data_dir = self.tmp_path / f"cold-{name}"
        self.ingest(data_dir, None, **source)
        return chroma_contents(data_dir)


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path) -> Iterator[Site]:
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_url").replace("postgresql://", "postgres://", 1)
    with SiteServer() as server:
        build_site(server)
        yield Site(server, tmp_path, database_url)


def test_refreshes_keep_chroma_equal_to_a_cold_ingest_of_the_site_as_it_is(site: Site) -> None:
    data_dir = site.tmp_path / "data"
    first = site.refresh()
    before = chroma_contents(data_dir)
    assert first["crawled_pages"]["pages_new"] == 4
    assert first["vector_index"]["chunks_embedded"] == len(before) >= 6
    assert_same_contents(before, site.cold("first"))

    # One section of a.html edited, b.html deleted, d.html added (linked from the index), c.html untouched.
    serve(
        site.server,
        "/docs/a.html",
        page(
            "Replication",
            section("Streaming", "streaming"),
            section("Slots", "slot", sentences=13),
            section("Failover", "failover"),
        ),
    )
    del site.server.routes["/docs/b.html"]
    serve(
        site.server,
        "/docs/index.html",
        page("Handbook", section("Start", "onboarding", 3), links=("a.html", "b.html", "c.html", "d.html")),
    )
    serve(site.server, "/docs/d.html", page("Indexes", section("B-tree", "btree")))
    second = site.refresh()
    after = chroma_contents(data_dir)

    crawl = second["crawled_pages"]
    assert (crawl["pages_changed"], crawl["pages_new"], crawl["pages_deleted"], crawl["pages_not_modified"]) == (
        2,
        1,
        1,
        1,
    )
    assert_same_contents(after, site.cold("second"))
    added, removed = after.keys() - before.keys(), before.keys() - after.keys()
    assert second["vector_index"]["chunks_embedded"] == len(added)
    assert second["vector_index"]["vectors_deleted"] == len(removed)
    assert urls_of({i: before[i] for i in removed}) == {
        site.server.url(p) for p in ("/docs/index.html", "/docs/a.html", "/docs/b.html")
    }
    assert urls_of({i: after[i] for i in added}) == {
        site.server.url(p) for p in ("/docs/index.html", "/docs/a.html", "/docs/d.html")
    }
    kept_in_a = [i for i in after.keys() & before.keys() if after[i].metadata["url"] == site.server.url("/docs/a.html")]
    assert len(kept_in_a) >= 2  # the untouched sections keep their chunks and their vectors, bit for bit
    for chunk_id in after.keys() & before.keys():
        assert np.array_equal(after[chunk_id].embedding, before[chunk_id].embedding)

    # A transient failure deletes nothing and embeds nothing.
    site.server.routes["/docs/c.html"] = Reply(500, "<html><body>down</body></html>")
    failing = site.refresh()
    assert failing["crawled_pages"]["pages_failed"] == 1
    assert failing["vector_index"]["chunks_embedded"] == failing["vector_index"]["vectors_deleted"] == 0
    assert_same_contents(chroma_contents(data_dir), after)

    # 410 Gone, and a page now out of scope, take their chunks with them.
    site.server.routes["/docs/c.html"] = Reply(410, "<html><body>gone</body></html>")
    narrowed = site.refresh(exclude=[r"/d\.html$"])
    assert narrowed["crawled_pages"]["pages_deleted"] == 2
    final = chroma_contents(data_dir)
    assert urls_of(final) == {site.server.url(p) for p in ("/docs/index.html", "/docs/a.html")}
    assert_same_contents(final, site.cold("narrowed", exclude=[r"/d\.html$"]))


def test_pages_stored_before_links_were_kept_are_fetched_in_full_once(site: Site) -> None:
    site.refresh()
    store = StateStore(site.database_url or sqlite_url(site.tmp_path / "data"))
    with store.transaction() as connection:
        connection.execute(sa.text("UPDATE pipeline_pages SET links = NULL"))
    store.dispose()
    log_start = len(site.server.log)
    relearning = site.refresh()
    assert relearning["crawled_pages"]["pages_not_modified"] == 4  # full bodies, unchanged content
    assert all("if-none-match" not in seen.headers for seen in site.server.log[log_start:])
    log_start = len(site.server.log)
    assert site.refresh()["crawled_pages"]["pages_not_modified"] == 4
    assert all(seen.status == 304 for seen in site.server.log[log_start:] if seen.path.endswith(".html"))


def topic_sections(n: int) -> tuple[str, ...]:
    return section("Overview", f"topic{n}"), section("Tuning", f"knob{n}")


def many_pages(server: SiteServer, count: int, sections: Callable[[int], tuple[str, ...]] = topic_sections) -> None:
    """A handbook (one section) linking to ``count`` topic pages, topic ``n`` made of ``sections(n)``."""
    links = tuple(f"p{n}.html" for n in range(count))
    serve(server, "/docs/index.html", page("Handbook", section("Start", "onboarding", 3), links=links))
    for n in range(count):
        serve(server, f"/docs/p{n}.html", page(f"Topic {n}", *sections(n)))


# Vectors saved every 4 texts, so a killed run leaves most of what it embedded.
SAVE_OFTEN = {"ops": {"vector_index": {"config": {"save_every": 4}}}}


def embedded_so_far(data_dir: Path, chunks: str = "1") -> int:
    """How many stored chunks (those matching the SQL condition ``chunks`` on ``c``) have a vector."""
    query = (
        f"SELECT count(*) FROM pipeline_chunks c WHERE ({chunks}) "
        "AND EXISTS (SELECT 1 FROM pipeline_vectors v WHERE v.text_hash = c.embedding_hash)"
    )
    engine = sa.create_engine(sqlite_url(data_dir))
    try:
        with engine.connect() as connection:
            return connection.scalar(sa.text(query)) or 0
    except sa.exc.OperationalError:  # the schema is not created yet
        return 0
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_a_run_killed_while_embedding_is_finished_by_the_next_without_duplicates_or_orphans(tmp_path: Path) -> None:
    with SiteServer() as server:
        many_pages(server, 16)
        data_dir, dagster_home = tmp_path / "data", quiet_dagster_home(tmp_path / "dagster_home")
        sources = write_sources(tmp_path / "sources.yaml", [Site(server, tmp_path, None).source()])
        env = worker_env(DAGSTER_HOME=str(dagster_home), PIPELINE_DATA_DIR=str(data_dir), PIPELINE_SOURCES=str(sources))
        command = worker_command(f"ingest:{SOURCE}", run_config=SAVE_OFTEN)

        kill_midway(command, env, lambda: embedded_so_far(data_dir), 12)
        saved = embedded_so_far(data_dir)
        store = StateStore(sqlite_url(data_dir))
        total = store.chunks.count(SOURCE)
        in_chroma = chroma_contents(data_dir)
        assert 12 <= saved < total, "the kill must land midway through embedding"
        assert len(in_chroma) <= saved

        metadata = run_worker(command, env, dagster_home, timeout=240)[f"ingest:{SOURCE}"]

        index = metadata["vector_index"]
        assert index["chunks_embedded"] == total - saved  # nothing saved before the kill is embedded again
        assert index["vectors_restored"] == saved - len(in_chroma)  # saved to the store, not yet to Chroma
        assert metadata["crawled_pages"]["pages_not_modified"] == 17
        contents = chroma_contents(data_dir)
        assert set(contents) == store.chunks.ids(SOURCE) and index["collection_count"] == total == len(contents)
        assert_same_contents(contents, Site(server, tmp_path, None).cold("reference"))
        store.dispose()
