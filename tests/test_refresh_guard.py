"""A bad night at the docs site, through the real ingest assets: the deletion guard, temporary
redirects and retained embeddings.

The loopback site of ``test_incremental_ingest`` (four pages under /docs/) is ingested, then
answers 404 everywhere, or 302 to a maintenance page, or loses a page and gets it back. Runs on
both state stores: SQLite, and PostgreSQL under the ``postgres://`` URL Heroku hands out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.definitions import defs
from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.partitions import register_sources
from pipeline.embedding import MiniLMEmbedder
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, sqlite_url
from tests.crawl.site_server import Reply, SiteServer
from tests.support import ALL_ASSETS, INGEST, make_resources, materialization_metadata, write_sources
from tests.test_incremental_ingest import SOURCE, UNUSED_RERANK_URL, build_site, chroma_contents, page, section, serve
from tests.tiny_site import PAGES, page_html, tiny_site_on_a_persistent_instance

PATHS = ("/docs/index.html", "/docs/a.html", "/docs/b.html", "/docs/c.html")
MAINTENANCE = "/docs/maintenance.html"


class CountingEmbedder(MiniLMEmbedder):
    """The real embedder, recording every text it is asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def iter_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        self.texts.extend(texts)
        yield from super().iter_batches(texts)


EMBEDDER = CountingEmbedder()


class CountingEmbedderResource(EmbedderResource):
    def get(self) -> MiniLMEmbedder:
        return EMBEDDER


@dataclass
class Refresh:
    result: dg.ExecuteInProcessResult
    embedded: list[str]

    def metadata(self, asset: str) -> dict:
        return materialization_metadata(self.result, asset)

    @property
    def failure(self) -> str:
        [failed] = [event for event in self.result.all_events if event.is_step_failure]
        assert failed.step_key == "crawled_pages"
        return failed.step_failure_data.error.message


@dataclass
class Site:
    server: SiteServer
    tmp_path: Path
    database_url: str | None

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    def refresh(self, **crawl_config: object) -> Refresh:
        self.data_dir.mkdir(exist_ok=True)
        source = {
            "name": SOURCE,
            "start_urls": [self.server.url("/docs/index.html")],
            "allow_private_hosts": True,
            "discover_sitemaps": False,
        }
        sources = write_sources(self.tmp_path / "sources.yaml", [source])
        resources = make_resources(
            self.data_dir, sources, self.tmp_path / "queries.yaml", UNUSED_RERANK_URL, database_url=self.database_url
        )
        resources["embedder"] = CountingEmbedderResource()
        EMBEDDER.texts.clear()
        run_config = {"ops": {"crawled_pages": {"config": crawl_config}}} if crawl_config else None
        with dg.DagsterInstance.ephemeral() as instance:
            register_sources(instance, [SOURCE])
            result = dg.materialize(
                ALL_ASSETS,
                selection=INGEST,
                partition_key=SOURCE,
                resources=resources,
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
            )
        return Refresh(result, list(EMBEDDER.texts))

    def store(self) -> StateStore:
        return StateStore(self.database_url or sqlite_url(self.data_dir))

    def snapshot(self) -> dict:
        """Everything a refresh could change: page rows, chunk rows, their vectors (when each was last used aside),
        Chroma and the lexical index."""
        store = self.store()
        try:
            with store.engine.connect() as connection:
                pages = {row.url: tuple(row) for row in connection.execute(sa.text("SELECT * FROM pipeline_pages"))}
                chunks = {
                    row.chunk_id: tuple(row) for row in connection.execute(sa.text("SELECT * FROM pipeline_chunks"))
                }
                vectors = {
                    (model, digest, bytes(blob))
                    for model, digest, blob in connection.execute(
                        sa.text("SELECT model, text_hash, embedding FROM pipeline_vectors")
                    )
                }
        finally:
            store.dispose()
        chroma = {
            chunk_id: (stored.document, stored.metadata, stored.embedding.tobytes())
            for chunk_id, stored in chroma_contents(self.data_dir).items()
        }
        lexical = LexicalIndex(self.data_dir).ids()
        return {"pages": pages, "chunks": chunks, "vectors": vectors, "chroma": chroma, "lexical": lexical}

    def redirected_since(self, moment: datetime) -> None:
        store = self.store()
        with store.transaction() as connection:
            connection.execute(sa.text("UPDATE pipeline_pages SET redirected_since = :moment"), {"moment": moment})
        store.dispose()

    def redirect_everything(self, status: int = 302) -> None:
        serve(self.server, MAINTENANCE, page("Down for maintenance", section("Soon", "maintenance")))
        for path in PATHS:
            self.server.routes[path] = Reply(status, headers={"Location": MAINTENANCE})


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path) -> Iterator[Site]:
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_url").replace("postgresql://", "postgres://", 1)
    with SiteServer() as server:
        build_site(server)
        yield Site(server, tmp_path, database_url)


def test_a_404_storm_fails_the_crawl_and_changes_nothing_until_the_removal_is_allowed(site: Site) -> None:
    assert site.refresh().result.success
    before = site.snapshot()
    assert len(before["pages"]) == 4 and before["chroma"] and before["lexical"] == set(before["chroma"])

    for path in PATHS:
        del site.server.routes[path]
    storm = site.refresh()
    assert not storm.result.success
    message = storm.failure
    assert f"'{SOURCE}'" in message and "4 of its 4 stored pages (100%): http_404 4 (100%)" in message
    assert "Nothing was deleted" in message
    assert "ops: {crawled_pages: {config: {allow_full_removal: true}}}" in message
    # The later steps never started, and nothing was materialised for automation to follow.
    assert {event.step_key for event in storm.result.all_events if event.is_step_start} == {"crawled_pages"}
    assert storm.result.get_asset_materialization_events() == []
    assert site.snapshot() == before

    allowed = site.refresh(allow_full_removal=True)
    assert allowed.result.success
    assert allowed.metadata("crawled_pages")["pages_deleted"] == 4
    after = site.snapshot()
    assert after["pages"] == after["chunks"] == after["chroma"] == {} and after["lexical"] == set()


def test_a_night_of_robots_disallow_everything_fails_the_crawl_and_changes_nothing(site: Site) -> None:
    assert site.refresh().result.success
    before = site.snapshot()
    site.server.routes["/robots.txt"] = Reply(body="User-agent: *\nDisallow: /\n", content_type="text/plain")
    disallowed = site.refresh()
    assert not disallowed.result.success
    assert "4 of its 4 stored pages (100%): robots_disallowed 4 (100%)" in disallowed.failure
    assert site.snapshot() == before


def test_a_maintenance_night_keeps_every_page_until_the_redirects_outlast_the_grace_period(site: Site) -> None:
    assert site.refresh().result.success
    before = site.snapshot()

    site.redirect_everything(302)
    night = site.refresh()
    assert night.result.success
    kept = site.snapshot()
    assert (
        kept["chroma"] == before["chroma"]
        and kept["chunks"] == before["chunks"]
        and kept["lexical"] == before["lexical"]
    )
    assert kept["pages"].keys() == before["pages"].keys()  # no maintenance page stored
    assert night.embedded == []
    crawled = night.metadata("crawled_pages")
    assert (crawled["pages_temporarily_redirected"], crawled["pages_deleted"], crawled["pages_new"]) == (4, 0, 0)

    # Eight days later the site still redirects: the pages count as moved, which the guard holds back.
    site.redirected_since(datetime.now(UTC) - timedelta(days=8))
    outlasted = site.refresh()
    assert not outlasted.result.success
    assert "4 of its 4 stored pages (100%): redirected 4 (100%)" in outlasted.failure
    assert site.snapshot()["chroma"] == before["chroma"]
    removed = site.refresh(allow_full_removal=True)
    assert removed.result.success and removed.metadata("crawled_pages")["pages_deleted"] == 4


def test_a_normal_answer_ends_the_temporary_redirect_period(site: Site) -> None:
    site.refresh()
    site.redirect_everything(307)
    assert site.refresh().metadata("crawled_pages")["pages_temporarily_redirected"] == 4
    store = site.store()
    assert all(page.redirected_since for page in store.pages.known(SOURCE).values())
    build_site(site.server)
    back = site.refresh()
    assert back.metadata("crawled_pages")["pages_not_modified"] == 4
    assert not any(page.redirected_since for page in store.pages.known(SOURCE).values())
    store.dispose()


def test_a_page_lost_below_the_guard_comes_back_without_embedding(site: Site) -> None:
    site.refresh()
    before = site.snapshot()
    vanished = site.server.routes.pop("/docs/c.html")
    lost = site.refresh()
    assert lost.result.success
    assert lost.metadata("crawled_pages")["pages_deleted"] == 1  # one page of four: within the floor
    c_url = site.server.url("/docs/c.html")
    c_chunks = {chunk_id for chunk_id, (_, metadata, _) in before["chroma"].items() if metadata["url"] == c_url}
    assert c_chunks and not c_chunks & site.snapshot()["chroma"].keys()

    site.server.routes["/docs/c.html"] = vanished
    back = site.refresh()
    index = back.metadata("vector_index")
    assert back.embedded == []  # the embedder was asked for nothing: chunks nor header lines
    assert (index["texts_embedded"], index["vectors_restored"], index["headers_embedded"]) == (0, len(c_chunks), 0)
    after = site.snapshot()
    assert after["chroma"] == before["chroma"]  # the same IDs, texts, metadata and vectors, bit for bit
    assert after["vectors"] == before["vectors"]
    assert after["lexical"] == before["lexical"]


def test_a_blocked_crawl_triggers_no_context_sets_and_leaves_the_published_ones(tmp_path: Path) -> None:
    with tiny_site_on_a_persistent_instance(tmp_path) as tiny:
        register_sources(tiny.instance, ["alpha", "beta"])
        tiny.run.ingest("alpha")
        tiny.run.ingest("beta")
        tiny.run.downstream()
        store = StateStore(sqlite_url(tiny.data_dir))
        published = store.context_sets.latest()
        assert published and any(
            p["url"].startswith(tiny.server.url("/alpha/")) for s in published.values() for p in s.passages
        )
        settled = dg.evaluate_automation_conditions(defs=defs, instance=tiny.instance)

        for path in [path for path in tiny.server.routes if path.startswith("/alpha/")]:
            del tiny.server.routes[path]
        blocked = dg.materialize(
            ALL_ASSETS,
            selection=INGEST,
            partition_key="alpha",
            resources=tiny.resources,
            instance=tiny.instance,
            raise_on_error=False,
        )
        assert not blocked.success
        after = dg.evaluate_automation_conditions(defs=defs, instance=tiny.instance, cursor=settled.cursor)
        assert after.total_requested == 0
        assert store.context_sets.latest() == published
        store.dispose()

        # The site is back: a refresh that succeeds is followed by the context sets, as always.
        for path, (title, text, links) in PAGES.items():
            tiny.server.page(path, page_html(title, text, links))
        tiny.run.ingest("alpha")
        recovered = dg.evaluate_automation_conditions(defs=defs, instance=tiny.instance, cursor=after.cursor)
        assert recovered.get_num_requested(dg.AssetKey("ranked_context_sets")) == 1
