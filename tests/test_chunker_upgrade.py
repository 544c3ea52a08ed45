"""Upgrading a store chunked before short sections were merged (issue 18): one resumable re-embedding.

The previous chunker cut every heading section on its own. Its chunks are what the chunker still
makes with ``merge_below_tokens: 0`` (the same IDs: ``tests/test_sections.py``), so the store it
left is made here by ingesting with that setting. The default chunker then re-chunks every
document once (its fingerprint changed), and embeds only the merged chunks, in a run killed
midway and finished by the next: nothing is fetched again, nothing saved before the kill is
embedded again, and a page whose sections merge nothing keeps its chunk IDs and vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.store.state import StateStore, sqlite_url
from tests.crawl.site_server import SiteServer
from tests.support import kill_midway, quiet_dagster_home, run_worker, worker_command, worker_env, write_sources
from tests.test_incremental_ingest import (
    SAVE_OFTEN,
    SOURCE,
    Site,
    assert_same_contents,
    chroma_contents,
    embedded_so_far,
    many_pages,
    section,
)

TOPICS = 24


def overview_and_note(n: int) -> tuple[str, ...]:
    """An overview, then a one-sentence note: under 40 tokens, it joins the overview."""
    return section("Overview", f"topic{n}", 5), section("Note", f"note{n}", 1)


def merged_with_a_vector(data_dir: Path) -> int:
    # The note's heading inside a passage marks a merged chunk.
    return embedded_so_far(data_dir, "instr(c.text, char(10) || 'Note' || char(10)) > 0")


@pytest.mark.timeout(300)
def test_merging_short_sections_re_embeds_only_merged_chunks_once_across_a_kill(tmp_path: Path) -> None:
    with SiteServer() as server:
        many_pages(server, TOPICS, overview_and_note)
        data_dir, dagster_home = tmp_path / "data", quiet_dagster_home(tmp_path / "dagster_home")
        site = Site(server, tmp_path, None)
        sources = write_sources(tmp_path / "sources.yaml", [site.source()])
        env = worker_env(DAGSTER_HOME=str(dagster_home), PIPELINE_DATA_DIR=str(data_dir), PIPELINE_SOURCES=str(sources))
        apart = {"ops": {"document_chunks": {"config": {"merge_below_tokens": 0}}}}
        run_worker(worker_command(f"ingest:{SOURCE}", run_config=apart), env, dagster_home, timeout=240)
        before = chroma_contents(data_dir)
        handbook = {chunk_id for chunk_id, stored in before.items() if stored.metadata["url"].endswith("/index.html")}
        assert len(before) == len(handbook) + 2 * TOPICS  # every topic: an overview chunk and a note chunk

        upgrade = worker_command(f"ingest:{SOURCE}", run_config=SAVE_OFTEN)
        kill_midway(upgrade, env, lambda: merged_with_a_vector(data_dir), 8)
        saved = merged_with_a_vector(data_dir)

        metadata = run_worker(upgrade, env, dagster_home, timeout=240)[f"ingest:{SOURCE}"]
        cold = site.cold("merged")

    after = chroma_contents(data_dir)
    assert saved < TOPICS, "the kill must land midway through the re-embedding"
    assert metadata["crawled_pages"]["pages_not_modified"] == TOPICS + 1  # nothing fetched in full again
    # Nothing saved before the kill is embedded again; the handbook's chunks are not embedded at all.
    assert metadata["vector_index"]["chunks_embedded"] == TOPICS - saved
    for chunk_id in handbook:
        assert after[chunk_id].document == before[chunk_id].document
        np.testing.assert_array_equal(after[chunk_id].embedding, before[chunk_id].embedding)
    merged = set(after) - handbook
    assert len(merged) == TOPICS and not merged & set(before)
    assert all("\nNote\n" in after[chunk_id].document for chunk_id in merged)
    store = StateStore(sqlite_url(data_dir))
    assert set(after) == store.chunks.ids(SOURCE)
    store.dispose()
    assert_same_contents(after, cold)
