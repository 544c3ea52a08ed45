"""Upgrading a store written before parent titles were read (extractor 1, chunker 1).

The previous release kept whole page bodies, extracted documents without a parent and chunked them
with ``Title > heading path`` headers. Its chunk IDs are the IDs a page without a parent still gets
(``tests/test_chunking.py`` holds the key), so that store is made here by ingesting the site with
its Up links left out, then giving the stored pages the bodies the site serves (Up links included:
the crawl finds every page unchanged, as after a real upgrade) and marking every document as the
previous extractor and chunker left it.

The new release then extracts every page again from its stored body, re-chunks every document,
and embeds only the chunks of pages that have a parent, once, in a run that is killed midway and
finished by the next; pages without a parent keep their chunk IDs and vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.store.state import StateStore, sqlite_url
from tests.crawl.site_server import SiteServer
from tests.support import run_materializations, worker_env, write_sources
from tests.test_incremental_ingest import SOURCE, Site, assert_same_contents, chroma_contents, page, section, serve

REPO = Path(__file__).resolve().parents[1]
TOPICS = 12


def topic_page(n: int, up_link: bool) -> str:
    html = page(f"Topic {n}", section("Overview", f"topic{n}"), section("Tuning", f"knob{n}"))
    # The manual's navigation: the Up link names the parent in its title, "Up" is its text.
    link = '<div class="navheader"><a accesskey="u" href="index.html" title="Handbook">Up</a></div>'
    return html.replace("<body>", f"<body>{link}") if up_link else html


def build(server: SiteServer, up_links: bool) -> dict[str, str]:
    """Serve the handbook (no parent) and its topics; returns each topic's URL → body."""
    links = tuple(f"p{n}.html" for n in range(TOPICS))
    serve(server, "/docs/index.html", page("Handbook", section("Start", "onboarding", 3), links=links))
    bodies = {}
    for n in range(TOPICS):
        bodies[server.url(f"/docs/p{n}.html")] = html = topic_page(n, up_links)
        serve(server, f"/docs/p{n}.html", html)
    return bodies


def as_the_previous_release_stored_it(data_dir: Path, bodies: dict[str, str]) -> None:
    engine = sa.create_engine(sqlite_url(data_dir))
    with engine.begin() as connection:
        for url, html in bodies.items():
            etag = f'"{hashlib.sha256(html.encode()).hexdigest()[:16]}"'  # as serve() sends it
            connection.execute(
                sa.text(
                    "UPDATE pipeline_pages SET html_zlib = :body, content_hash = :digest, etag = :etag WHERE url = :url"
                ),
                {
                    "body": zlib.compress(html.encode()),
                    "digest": hashlib.sha256(html.encode()).hexdigest(),
                    "etag": etag,
                    "url": url,
                },
            )
        connection.execute(
            sa.text(
                "UPDATE pipeline_documents SET extractor_version = '1', parent_title = NULL, chunked_key = 'chunker 1'"
            )
        )
    engine.dispose()


def parented_chunks_with_a_vector(data_dir: Path) -> int:
    engine = sa.create_engine(sqlite_url(data_dir))
    try:
        with engine.connect() as connection:
            return connection.scalar(
                sa.text(
                    "SELECT count(*) FROM pipeline_chunks c WHERE c.embedding_text LIKE 'Handbook > Topic%'"
                    " AND EXISTS (SELECT 1 FROM pipeline_vectors v WHERE v.text_hash = c.embedding_hash)"
                )
            )
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_an_upgraded_store_re_embeds_only_pages_with_a_parent_once_across_a_kill(tmp_path: Path) -> None:
    with SiteServer() as server:
        build(server, up_links=False)
        data_dir, dagster_home = tmp_path / "data", tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        site = Site(server, tmp_path, None)
        sources = write_sources(tmp_path / "sources.yaml", [site.source()])
        env = worker_env(DAGSTER_HOME=str(dagster_home), PIPELINE_DATA_DIR=str(data_dir), PIPELINE_SOURCES=str(sources))
        save_often = json.dumps({"ops": {"vector_index": {"config": {"save_every": 4}}}})
        command = [sys.executable, "-m", "tests.restart_worker", f"--run-config={save_often}", f"ingest:{SOURCE}"]
        first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert first.returncode == 0, first.stderr[-4000:]
        before = chroma_contents(data_dir)
        handbook = {chunk_id for chunk_id, stored in before.items() if stored.metadata["url"].endswith("/index.html")}
        assert handbook and len(before) > len(handbook)

        as_the_previous_release_stored_it(data_dir, build(server, up_links=True))
        killed = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while parented_chunks_with_a_vector(data_dir) < 8:
            assert killed.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never started embedding the re-chunked pages"
            time.sleep(0.05)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        saved = parented_chunks_with_a_vector(data_dir)

        finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert finished.returncode == 0, finished.stderr[-4000:]
        run_id = json.loads(finished.stdout.strip().splitlines()[-1])[f"ingest:{SOURCE}"]
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            metadata = run_materializations(instance, run_id)
        cold = site.cold("upgraded")

    after = chroma_contents(data_dir)
    topic_chunks = len(before) - len(handbook)
    assert saved < topic_chunks, "the kill must land midway through the re-embedding"
    assert metadata["crawled_pages"]["pages_not_modified"] == TOPICS + 1  # nothing fetched in full again
    # Nothing saved before the kill is embedded again, and the handbook's chunks are not embedded at all.
    assert metadata["vector_index"]["chunks_embedded"] == topic_chunks - saved
    for chunk_id in handbook:
        assert after[chunk_id].document == before[chunk_id].document
        np.testing.assert_array_equal(after[chunk_id].embedding, before[chunk_id].embedding)
    new_topic_chunks = set(after) - handbook
    assert len(new_topic_chunks) == topic_chunks and not new_topic_chunks & set(before)
    store = StateStore(sqlite_url(data_dir))
    assert set(after) == store.chunks.ids(SOURCE)
    embedded = {chunk.chunk_id: chunk.embedding_text for chunk in store.chunks.iterate(SOURCE)}
    assert all(embedded[chunk_id].startswith("Handbook > Topic ") for chunk_id in new_topic_chunks)
    store.dispose()
    assert_same_contents(after, cold)
