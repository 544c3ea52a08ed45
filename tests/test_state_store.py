"""The state store on both backends: SQLite (local default) and real PostgreSQL (Heroku)."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.embedding import MODEL_NAME
from pipeline.ingest.vectors import sync_header_embeddings
from pipeline.store.chunks import text_hash
from pipeline.store.records import (
    Candidate,
    ChunkChanges,
    ContextSet,
    PageBody,
    Query,
    Ranking,
    Revalidated,
    StoredChunk,
    VectorPruning,
)
from pipeline.store.sql import BATCH
from pipeline.store.state import StateStore, normalize_database_url
from tests.support import save_page


def _chunk(chunk_id, url="http://d/a", source="docs"):
    return StoredChunk(chunk_id, source, url, "A", ("H1", "H2"), f"text {chunk_id}", f"A > H1\ntext {chunk_id}", 5, 0)


def _pending(store, source="docs", model=MODEL_NAME):
    return [item.text for window in store.embeddings.iter_pending(source, model) for item in window]


def test_heroku_postgres_scheme_is_rewritten():
    assert normalize_database_url("postgres://u:p@h:5432/d") == "postgresql://u:p@h:5432/d"
    assert normalize_database_url("postgresql://h/d") == "postgresql://h/d"


def test_pages_round_trip_and_extraction_queue(store):
    save_page(store, "http://d/a", "h1", html="<p>é</p>")
    save_page(store, "http://d/b", "h2")
    assert set(store.pages.known("docs")) == {"http://d/a", "http://d/b"}
    assert store.pages.owner("http://d/a") == "docs"
    assert store.pages.body("http://d/a") == PageBody("<p>é</p>", "h1")
    assert list(store.pages.to_extract("docs", "v1")) == ["http://d/a", "http://d/b"]

    store.pages.save_document(
        url="http://d/a",
        source="docs",
        page_hash="h1",
        extractor_version="v1",
        title="A",
        sections=[],
        content_hash="d1",
    )
    assert list(store.pages.to_extract("docs", "v1")) == ["http://d/b"]
    # A new extractor version re-extracts stored pages without any fetch.
    assert list(store.pages.to_extract("docs", "v2")) == ["http://d/a", "http://d/b"]
    save_page(store, "http://d/a", "h1-changed")
    assert list(store.pages.to_extract("docs", "v1")) == ["http://d/a", "http://d/b"]

    store.pages.touch_many(
        [Revalidated("http://d/b", etag='"new"', last_modified="Wed, 01 Jan 2025 00:00:00 GMT", fetched_at=None)]
    )
    assert store.pages.known("docs")["http://d/b"].etag == '"new"'
    assert store.pages.body("http://d/b").content_hash == "h2"


def test_a_large_site_is_extracted_and_chunked_a_batch_at_a_time_without_missing_a_page(store):
    urls = [f"http://d/{n:03}" for n in range(120)]  # more than two batches of documents
    for url in urls:
        save_page(store, url, f"h-{url}")
    extracted = []
    for url in store.pages.to_extract("docs", "v1"):
        store.pages.save_document(
            url=url,
            source="docs",
            page_hash=f"h-{url}",
            extractor_version="v1",
            title=url,
            sections=[],
            content_hash="d",
        )
        extracted.append(url)
    assert extracted == urls and list(store.pages.to_extract("docs", "v1")) == []

    chunked = []
    for document in store.pages.documents_to_chunk("docs", "cfg"):
        # Chunking takes the document out of what the query selects, while the next batches are still to come.
        store.chunks.replace(source="docs", url=document.url, new_chunks=[], chunked_key="d:cfg")
        chunked.append(document.url)
    assert chunked == urls and list(store.pages.documents_to_chunk("docs", "cfg")) == []


def test_replacing_chunks_keeps_embeddings_of_surviving_ids(store):
    save_page(store, "http://d/a", "h1")
    store.pages.save_document(
        url="http://d/a",
        source="docs",
        page_hash="h1",
        extractor_version="v1",
        title="A",
        sections=[],
        content_hash="d1",
    )
    assert [document.url for document in store.pages.documents_to_chunk("docs", "cfg")] == ["http://d/a"]

    assert store.chunks.replace(
        source="docs", url="http://d/a", new_chunks=[_chunk("c1"), _chunk("c2")], chunked_key="d1:cfg"
    ) == ChunkChanges(added=2, removed=0)
    assert list(store.pages.documents_to_chunk("docs", "cfg")) == []
    assert [document.url for document in store.pages.documents_to_chunk("docs", "other-cfg")] == ["http://d/a"]

    vector = np.arange(384, dtype=np.float32) / 384
    store.embeddings.save(MODEL_NAME, {text_hash(_chunk("c1").embedding_text): vector})
    assert _pending(store) == [_chunk("c2").embedding_text]

    assert store.chunks.replace(
        source="docs", url="http://d/a", new_chunks=[_chunk("c1"), _chunk("c3")], chunked_key="d2:cfg"
    ) == ChunkChanges(added=1, removed=1)
    stored = store.chunks.by_id(["c1", "c3", "missing"])
    assert set(stored) == {"c1", "c3"}
    assert stored["c1"].heading_path == ("H1", "H2")
    embedded = store.embeddings.embedded_by_id(MODEL_NAME, ["c1", "c3", "missing"])
    assert set(embedded) == {"c1"}
    np.testing.assert_array_equal(embedded["c1"].embedding, vector)
    assert embedded["c1"].chunk == stored["c1"]


def test_chunks_are_read_back_a_batch_at_a_time_in_chunk_id_order(store):
    # More chunks than one read fetches, over two sources and pages, stored out of ID order.
    expected = {}
    for source in ("docs", "other"):
        for page in range(3):
            url = f"http://d/{source}/{page}"
            save_page(store, url, f"h-{url}", source=source)
            chunk_ids = [f"{n * 7919 % 600:04}-{source}" for n in range(page * 200, page * 200 + 200)]
            new_chunks = [_chunk(chunk_id, url=url, source=source) for chunk_id in chunk_ids]
            store.chunks.replace(source=source, url=url, new_chunks=new_chunks, chunked_key=f"{page}:cfg")
            expected.update({chunk.chunk_id: chunk for chunk in new_chunks})
    assert len(expected) == 1200 > BATCH

    rows = list(store.chunks.iter_index_rows())
    assert rows == [
        (chunk_id, expected[chunk_id].source, expected[chunk_id].embedding_text) for chunk_id in sorted(expected)
    ]
    assert list(store.chunks.iterate()) == [expected[chunk_id] for chunk_id in sorted(expected)]
    assert [chunk.chunk_id for chunk in store.chunks.iterate("other")] == sorted(
        c for c in expected if c.endswith("other")
    )
    assert list(store.chunks.iter_embedding_texts()) == [
        expected[chunk_id].embedding_text for chunk_id in sorted(expected)
    ]


def test_deletions_cascade_through_reconciliation(store):
    save_page(store, "http://d/a", "h1")
    store.pages.save_document(
        url="http://d/a",
        source="docs",
        page_hash="h1",
        extractor_version="v1",
        title="A",
        sections=[],
        content_hash="d1",
    )
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_chunk("c1")], chunked_key="d1:cfg")
    save_page(store, "http://o/x", "h9", source="other")
    store.pages.save_document(
        url="http://o/x",
        source="other",
        page_hash="h9",
        extractor_version="v1",
        title="X",
        sections=[],
        content_hash="d9",
    )
    store.chunks.replace(
        source="other", url="http://o/x", new_chunks=[_chunk("c9", "http://o/x", "other")], chunked_key="d9:cfg"
    )

    assert store.pages.delete(["http://d/a", "http://d/never-stored"]) == 1
    assert store.pages.delete_orphan_documents("docs") == 1
    assert store.chunks.delete_orphans("docs") == 1
    assert store.chunks.ids() == {"c9"}
    assert store.pages.document_count() == 1


def test_queries_candidates_rankings_and_cache(store):
    store.rankings.replace_queries([Query("q1", "first"), Query("q2", "second")])
    store.rankings.replace_queries([Query("q2", "second"), Query("q1", "first")])
    assert store.rankings.queries() == [Query("q2", "second"), Query("q1", "first")]

    store.rankings.replace_candidates({"q1": [("c1", 0.9), ("c2", 0.5)]}, embedding_model=MODEL_NAME)
    assert store.rankings.candidates() == {"q1": [Candidate(1, "c1", 0.9), Candidate(2, "c2", 0.5)]}
    assert store.rankings.embedding_models() == {"q1": MODEL_NAME}

    ranking = Ranking(
        query_id="q1",
        model="m",
        candidates_hash="h",
        reranked=True,
        api_version="2",
        search_units=1,
        cached=False,
        error=None,
        scores=(("c2", 0.8), ("c1", 0.1)),
    )
    store.rankings.replace_rankings([ranking])
    assert store.rankings.rankings() == {"q1": ranking}
    assert store.rankings.billed_search_units() == 1

    assert store.rankings.cached_response("k") is None
    store.rankings.cache_response("k", {"results": [{"index": 0, "relevance_score": 0.5}]})
    store.rankings.cache_response("k", {"results": []})
    assert store.rankings.cached_response("k") == {"results": []}


class _CountingEmbedder:
    """Records what it embeds; vectors are derived from the text so they can be checked."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, texts):
        self.embedded.extend(texts)
        return np.array([[len(text), 1.0] + [0.0] * 382 for text in texts], dtype=np.float32)


def test_header_lines_are_embedded_once_and_dropped_with_their_chunks(store):
    chunks = [
        StoredChunk("c1", "docs", "http://d/a", "A", ("A", "Setup"), "one", "A > Setup\none", 5, 0),
        StoredChunk("c2", "docs", "http://d/a", "A", ("A", "Setup"), "two", "A > Setup\ntwo", 5, 1),
        StoredChunk("c3", "docs", "http://d/a", "A", (), "no header", "no header", 5, 2),
    ]
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=chunks, chunked_key="k1")
    embedder = _CountingEmbedder()
    assert sync_header_embeddings(store, embedder) == (1, 0, 0)
    assert embedder.embedded == ["A > Setup"]
    texts = dict(store.embeddings.iter_embedded_texts())
    assert texts["A > Setup"][0] == len("A > Setup")  # the scorer finds the header's vector by its text
    assert sync_header_embeddings(store, embedder) == (0, 0, 0) and embedder.embedded == ["A > Setup"]
    renamed = StoredChunk("c4", "docs", "http://d/a", "A", ("A", "Install"), "one", "A > Install\none", 5, 0)
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[renamed], chunked_key="k2")
    assert sync_header_embeddings(store, embedder) == (1, 0, 1)
    assert store.embeddings.embedded_headers() == {"A > Install"}
    # The heading is renamed back: its deleted header's embedding is reused, not embedded again.
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=chunks, chunked_key="k1")
    assert sync_header_embeddings(store, embedder) == (0, 1, 1)
    assert embedder.embedded == ["A > Setup", "A > Install"]
    # The reused vector moved back to the headers; the one just deleted is kept in its place.
    assert set(store.embeddings.kept(MODEL_NAME, ["A > Setup", "A > Install"])) == {"A > Install"}
    assert dict(store.embeddings.iter_embedded_texts())["A > Setup"][0] == len("A > Setup")


def _context_set(query_id, passages, reranked=True):
    return ContextSet(
        query_id=query_id,
        query=f"question {query_id}",
        model="cohere-rerank-3-5",
        reranked=reranked,
        api_version="2" if reranked else None,
        reason_not_reranked=None if reranked else "RerankUnavailable: x",
        token_budget=3000,
        tokens=7 * len(passages),
        passages=tuple(
            {"rank": rank, "url": url, "text": f"about {url}"} for rank, url in enumerate(passages, start=1)
        ),
    )


def test_context_sets_are_kept_per_run_and_the_view_holds_the_newest_run(store):
    run_1 = [_context_set("q1", ["http://d/a", "http://d/b"]), _context_set("q2", ["http://d/c"], reranked=False)]
    assert store.context_sets.save("run-1", run_1, keep_runs=2) == 0
    assert store.context_sets.latest() == {"q1": run_1[0], "q2": run_1[1]}
    # The newest run is the whole output: a query it no longer has is not "latest" any more.
    run_2 = [_context_set("q1", ["http://d/b"])]
    store.context_sets.save("run-2", run_2, keep_runs=2)
    assert store.context_sets.latest() == {"q1": run_2[0]}
    assert [(run.run_id, run.queries, run.reranked) for run in store.context_sets.runs()] == [
        ("run-2", 1, 1),
        ("run-1", 2, 1),
    ]
    assert store.context_sets.runs()[0].created_at.tzinfo is not None

    # What a QA system runs: plain SQL against the view.
    first_url = "passages->0->>'url'" if store.dialect == "postgresql" else "json_extract(passages, '$[0].url')"
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                f"SELECT run_id, query_id, reranked, api_version, {first_url} AS url FROM pipeline_latest_context_sets"
            )
        ).all()
        keyed = connection.execute(
            sa.text("SELECT count(*) FROM pipeline_context_sets WHERE query_id = 'q1' AND run_id = 'run-1'")
        ).scalar()
    assert [tuple(row) for row in rows] == [("run-2", "q1", True, "2", "http://d/b")]
    assert keyed == 1

    # A re-executed run replaces its own rows; the third run pushes the oldest out.
    store.context_sets.save("run-2", run_1, keep_runs=2)
    assert set(store.context_sets.latest()) == {"q1", "q2"}
    assert store.context_sets.save("run-3", run_2, keep_runs=2) == 1
    assert [run.run_id for run in store.context_sets.runs()] == ["run-3", "run-2"]
    with pytest.raises(ValueError, match="keep_runs must be at least 1"):
        store.context_sets.save("run-4", run_2, keep_runs=0)


def test_a_context_sets_table_of_the_old_shape_is_replaced(store):
    url = store.engine.url.render_as_string(hide_password=False)
    with store.transaction() as connection:
        connection.execute(sa.text("DROP TABLE pipeline_alembic_version"))  # as written before migrations
        connection.execute(sa.text("DROP VIEW pipeline_latest_answers"))  # which reads the context sets' view
        connection.execute(sa.text("DROP VIEW pipeline_latest_context_sets"))
        connection.execute(sa.text("DROP TABLE pipeline_context_sets"))
        connection.execute(
            sa.text(
                "CREATE TABLE pipeline_context_sets "
                "(run_id TEXT, query_id TEXT, context_set TEXT, PRIMARY KEY (run_id, query_id))"
            )
        )
    reopened = StateStore(url)
    reopened.context_sets.save("run-1", [_context_set("q1", ["http://d/a"])], keep_runs=30)
    assert set(reopened.context_sets.latest()) == {"q1"}
    reopened.dispose()


def test_links_are_stored_with_the_page_and_kept_through_a_304(store):
    save_page(store, "http://d/a", "h1")
    store.pages.save(
        url="http://d/b",
        source="docs",
        final_url=None,
        status=200,
        content_type="text/html",
        etag='"b"',
        last_modified=None,
        content_hash="h2",
        html="<p>b</p>",
        fetched_at=None,
        links=["http://d/a", "http://d/c"],
    )
    store.pages.touch_many(
        [
            Revalidated("http://d/b", etag='"b"', last_modified=None, fetched_at=None),  # a 304: no body, no links
            Revalidated("http://d/a", etag=None, last_modified=None, fetched_at=None, links=("http://d/b",)),
        ]
    )
    assert store.pages.known("docs")["http://d/b"].links == ("http://d/a", "http://d/c")
    assert store.pages.known("docs")["http://d/a"].links == ("http://d/b",)


def test_pages_stored_before_links_were_kept_get_the_column_and_no_links(store):
    url = store.engine.url.render_as_string(hide_password=False)
    save_page(store, "http://d/a", "h1")
    with store.transaction() as connection:
        connection.execute(sa.text("DROP TABLE pipeline_alembic_version"))  # as written before migrations
        connection.execute(sa.text("ALTER TABLE pipeline_pages DROP COLUMN links"))
    reopened = StateStore(url)
    assert reopened.pages.known("docs")["http://d/a"].links is None
    assert reopened.pages.body("http://d/a").content_hash == "h1"
    reopened.dispose()


def test_pages_stored_before_temporary_redirects_were_tracked_get_the_column(store):
    url = store.engine.url.render_as_string(hide_password=False)
    save_page(store, "http://d/a", "h1")
    with store.transaction() as connection:
        connection.execute(sa.text("DROP TABLE pipeline_alembic_version"))  # as written before migrations
        connection.execute(sa.text("ALTER TABLE pipeline_pages DROP COLUMN redirected_since"))
    reopened = StateStore(url)
    assert reopened.pages.known("docs")["http://d/a"].redirected_since is None
    reopened.pages.mark_temporarily_redirected("http://d/a")
    since = reopened.pages.known("docs")["http://d/a"].redirected_since
    assert since is not None and since.tzinfo is not None
    reopened.dispose()


def test_deleted_chunks_and_headers_leave_their_vectors_for_the_retention_period(store):
    save_page(store, "http://d/a", "h1")
    store.pages.save_document(
        url="http://d/a",
        source="docs",
        page_hash="h1",
        extractor_version="v1",
        title="A",
        sections=[],
        content_hash="d1",
    )
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_chunk("c1"), _chunk("c2")], chunked_key="k1")
    texts = {chunk_id: _chunk(chunk_id).embedding_text for chunk_id in ("c1", "c2")}
    vectors = {
        texts["c1"]: np.full(384, 0.25, dtype=np.float32),
        texts["c2"]: np.linspace(-1, 1, 384, dtype=np.float32),
    }
    store.embeddings.save(MODEL_NAME, {text_hash(text): vector for text, vector in vectors.items()})
    store.embeddings.save_header_embeddings({"A > H1": np.full(384, 0.5, dtype=np.float32)})
    retention = timedelta(days=14)
    assert store.embeddings.prune(configured=MODEL_NAME, retention=retention) == VectorPruning(0, 0, ())

    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_chunk("c2")], chunked_key="k2")  # an edit
    assert store.pages.delete(["http://d/a"]) == 1 and store.pages.delete_orphan_documents("docs") == 1
    assert store.chunks.delete_orphans("docs") == 1  # the page went
    store.embeddings.delete_header_embeddings(["A > H1"])
    assert store.chunks.ids() == set() and store.embeddings.embedded_headers() == set()
    # Their last chunks gone, the chunks' vectors start their retention (the header's started as it was deleted).
    assert store.embeddings.prune(configured=MODEL_NAME, retention=retention) == VectorPruning(2, 0, ())

    found = store.embeddings.kept(MODEL_NAME, [*texts.values(), "A > H1", "never embedded"])
    assert set(found) == {*texts.values(), "A > H1"}
    for text, vector in vectors.items():
        assert found[text].tobytes() == vector.tobytes()
    # A chunk of c1's text comes back within the retention: its vector is in use again, nothing to embed.
    store.chunks.replace(source="docs", url="http://d/b", new_chunks=[_chunk("c1", url="http://d/b")], chunked_key="k")
    assert _pending(store) == []
    assert store.embeddings.prune(configured=MODEL_NAME, retention=timedelta(0)) == VectorPruning(0, 2, ())
    assert set(store.embeddings.kept(MODEL_NAME, [*texts.values(), "A > H1"])) == {texts["c1"]}


def test_a_removed_source_leaves_its_vectors_too(store):
    save_page(store, "http://d/a", "h1")
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_chunk("c1")], chunked_key="k1")
    store.embeddings.save(MODEL_NAME, {text_hash("A > H1\ntext c1"): np.ones(384, dtype=np.float32)})
    assert store.delete_source("docs").chunks == 1
    assert store.embeddings.prune(configured=MODEL_NAME, retention=timedelta(days=1)).released == 1
    assert list(store.embeddings.kept(MODEL_NAME, ["A > H1\ntext c1"])) == ["A > H1\ntext c1"]


def test_processes_opening_a_fresh_postgres_database_at_once_create_the_schema_once(postgres_url):
    # Six processes' worth of engines opening the schema together; any error is raised here.
    with ThreadPoolExecutor(max_workers=6) as pool:
        stores = list(pool.map(lambda _: StateStore(postgres_url), range(6)))
    assert stores[0].context_sets.latest() == {}
    for opened in stores:
        opened.dispose()
