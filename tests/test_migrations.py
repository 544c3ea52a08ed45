"""Schema migrations on SQLite and real PostgreSQL: databases written before Alembic upgrade in place.

The schemas of earlier code are frozen here as that code created them (``metadata.create_all`` and
the view), with a row in every table, so that changes to ``pipeline.store.schema`` cannot make them
look newer than they were.
"""

from __future__ import annotations

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pipeline.embedding import MODEL_NAME
from pipeline.store.chunks import text_hash
from pipeline.store.migrate import (
    VERSION_TABLE,
    alembic_config,
    current_revisions,
    head_revisions,
    pipeline_tables_only,
    upgrade_schema,
)
from pipeline.store.records import Candidate, PageBody, Query
from pipeline.store.schema import context_sets, metadata
from pipeline.store.schema import vectors as vectors_table
from pipeline.store.sql import aware
from pipeline.store.state import StateStore, create_state_engine, sqlite_url

BASELINE = "87b399d"  # the baseline revision's schema
RANKINGS_BY_CANDIDATES = "63ed082"  # the first merge after it: rankings carry their candidates' hash
BEFORE_ALEMBIC = "3c6ac1c"  # the last main without migrations: revision 0002's schema
MOMENT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# The tables revisions 0003 (vectors by model) and 0004 (what the checks need) change.
CHANGED_SINCE_0002 = {
    "pipeline_chunks",
    "pipeline_retained_embeddings",
    "pipeline_candidates",
    "pipeline_context_sets",
    "pipeline_documents",
}
VECTOR = np.linspace(-1, 1, 384, dtype=np.float32)
LATEST_VIEW_DDL = """
CREATE VIEW pipeline_latest_context_sets AS
SELECT run_id, query_id, query, position, model, reranked, api_version, reason_not_reranked, token_budget, tokens, passages, created_at
FROM pipeline_context_sets
WHERE run_id = (SELECT run_id FROM pipeline_context_sets ORDER BY created_at DESC, run_id DESC LIMIT 1)
"""


def _schema_of(commit: str) -> sa.MetaData:
    """The pipeline's tables as the code of ``commit`` declared them."""
    later = commit != BASELINE
    latest = commit == BEFORE_ALEMBIC
    schema = sa.MetaData()
    moment = sa.DateTime(timezone=True)
    sa.Table(
        "pipeline_pages", schema,
        sa.Column("url", sa.Text, primary_key=True), sa.Column("source", sa.Text, nullable=False, index=True),
        sa.Column("final_url", sa.Text), sa.Column("status", sa.Integer), sa.Column("content_type", sa.Text),
        sa.Column("etag", sa.Text), sa.Column("last_modified", sa.Text), sa.Column("content_hash", sa.Text, index=True),
        sa.Column("html_zlib", sa.LargeBinary), sa.Column("links", sa.JSON), sa.Column("fetched_at", moment),
        sa.Column("last_seen_at", moment), *([sa.Column("redirected_since", moment)] if latest else []),
    )  # fmt: skip
    sa.Table(
        "pipeline_documents", schema,
        sa.Column("url", sa.Text, primary_key=True), sa.Column("source", sa.Text, nullable=False, index=True),
        sa.Column("page_hash", sa.Text, nullable=False), sa.Column("extractor_version", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False), sa.Column("sections", sa.JSON, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False), sa.Column("chunked_key", sa.Text),
        sa.Column("extracted_at", moment),
    )  # fmt: skip
    sa.Table(
        "pipeline_chunks", schema,
        sa.Column("chunk_id", sa.Text, primary_key=True), sa.Column("source", sa.Text, nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False, index=True), sa.Column("title", sa.Text, nullable=False),
        sa.Column("heading_path", sa.JSON, nullable=False), sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedding_text", sa.Text, nullable=False), sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False), sa.Column("embedding", sa.LargeBinary),
    )  # fmt: skip
    sa.Table(
        "pipeline_header_embeddings", schema,
        sa.Column("header", sa.Text, primary_key=True), sa.Column("embedding", sa.LargeBinary, nullable=False),
    )  # fmt: skip
    sa.Table(
        "pipeline_queries", schema,
        sa.Column("query_id", sa.Text, primary_key=True), sa.Column("query", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )  # fmt: skip
    sa.Table(
        "pipeline_candidates", schema,
        sa.Column("query_id", sa.Text, primary_key=True), sa.Column("retrieval_rank", sa.Integer, primary_key=True),
        sa.Column("chunk_id", sa.Text, nullable=False), sa.Column("retrieval_score", sa.Float, nullable=False),
    )  # fmt: skip
    sa.Table(
        "pipeline_reranked", schema,
        sa.Column("query_id", sa.Text, primary_key=True), sa.Column("model", sa.Text, nullable=False),
        sa.Column("reranked", sa.Boolean, nullable=False), sa.Column("api_version", sa.Text),
        sa.Column("search_units", sa.Integer, nullable=False), sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text), sa.Column("ranking", sa.JSON, nullable=False),
        *([sa.Column("candidates_hash", sa.Text, nullable=False)] if later else []),
        sa.Column("updated_at", moment, nullable=False),
    )  # fmt: skip
    sa.Table(
        "pipeline_rerank_cache", schema,
        sa.Column("cache_key", sa.Text, primary_key=True), sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", moment, nullable=False),
    )  # fmt: skip
    sa.Table(
        "pipeline_context_sets", schema,
        sa.Column("run_id", sa.Text, primary_key=True), sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("query", sa.Text, nullable=False), sa.Column("position", sa.Integer, nullable=False),
        sa.Column("model", sa.Text, nullable=False), sa.Column("reranked", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.Text), sa.Column("reason_not_reranked", sa.Text),
        sa.Column("token_budget", sa.Integer, nullable=False), sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("passages", sa.JSON, nullable=False), sa.Column("created_at", moment, nullable=False, index=True),
    )  # fmt: skip
    if latest:
        sa.Table(
            "pipeline_retained_embeddings", schema,
            sa.Column("model", sa.Text, primary_key=True), sa.Column("text_hash", sa.Text, primary_key=True),
            sa.Column("embedding", sa.LargeBinary, nullable=False), sa.Column("retained_at", moment, nullable=False, index=True),
        )  # fmt: skip
        sa.Table(
            "pipeline_orphaned_sources", schema,
            sa.Column("source", sa.Text, primary_key=True), sa.Column("orphaned_at", moment, nullable=False),
        )  # fmt: skip
    return schema


def _write_database_of(commit: str, url: str) -> None:
    """A database as the code of ``commit`` left it after a run: every table holds a row."""
    schema = _schema_of(commit)
    table = schema.tables
    ranking = [["c1", 0.9]] if commit != BASELINE else [[1, 0.9]]  # by retrieval rank until 63ed082
    rows = {
        "pipeline_pages": {
            "url": "http://d/a", "source": "docs", "status": 200, "etag": '"a"', "content_hash": "h1",
            "html_zlib": zlib.compress(b"<p>a</p>"), "links": ["http://d/b"], "fetched_at": MOMENT, "last_seen_at": MOMENT,
        },
        "pipeline_documents": {
            "url": "http://d/a", "source": "docs", "page_hash": "h1", "extractor_version": "v1", "title": "A",
            "sections": [], "content_hash": "d1", "chunked_key": "k1", "extracted_at": MOMENT,
        },
        "pipeline_chunks": {
            "chunk_id": "c1", "source": "docs", "url": "http://d/a", "title": "A", "heading_path": ["A"],
            "text": "text", "embedding_text": "A\ntext", "token_count": 1, "position": 0, "embedding": VECTOR.tobytes(),
        },
        "pipeline_header_embeddings": {"header": "A", "embedding": VECTOR.tobytes()},
        "pipeline_queries": {"query_id": "q1", "query": "what is a?", "position": 0},
        "pipeline_candidates": {"query_id": "q1", "retrieval_rank": 1, "chunk_id": "c1", "retrieval_score": 0.5},
        "pipeline_reranked": {
            "query_id": "q1", "model": "cohere-rerank-3-5", "reranked": True, "api_version": "2", "search_units": 1,
            "cached": False, "error": None, "ranking": ranking, "updated_at": MOMENT,
            **({"candidates_hash": "hash-of-q1"} if commit != BASELINE else {}),
        },
        "pipeline_rerank_cache": {"cache_key": "key-1", "response": {"results": []}, "created_at": MOMENT},
        "pipeline_context_sets": {
            "run_id": "run-1", "query_id": "q1", "query": "what is a?", "position": 0, "model": "cohere-rerank-3-5",
            "reranked": True, "api_version": "2", "reason_not_reranked": None, "token_budget": 100, "tokens": 1,
            "passages": [{"rank": 1, "chunk_id": "c1"}], "created_at": MOMENT,
        },
    }  # fmt: skip
    engine = create_state_engine(url)  # as that code opened it: SQLite in WAL mode
    try:
        with engine.begin() as connection:
            schema.create_all(connection)
            connection.execute(sa.text(LATEST_VIEW_DDL))
            for name, row in rows.items():
                connection.execute(table[name].insert(), [row])
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    return sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _revisions(url: str) -> tuple[str, ...]:
    engine = create_state_engine(url)
    try:
        with engine.connect() as connection:
            return current_revisions(connection)
    finally:
        engine.dispose()


def _schema_differences(url: str) -> list:
    """What ``alembic check`` would report: the schema module against the database."""
    engine = create_state_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "include_name": pipeline_tables_only}
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _columns(connection: sa.Connection, table: str) -> list[tuple[str, str, bool]]:
    return [
        (column["name"], str(column["type"]), column["nullable"])
        for column in sa.inspect(connection).get_columns(table)
    ]


def _assert_kept(store: StateStore) -> None:
    """Every row of the old database is there, through the store, except rankings by retrieval rank."""
    [page] = store.pages.known("docs").values()
    assert (page.url, page.etag, page.links, page.redirected_since) == ("http://d/a", '"a"', ("http://d/b",), None)
    assert store.pages.body("http://d/a") == PageBody("<p>a</p>", "h1")
    [embedded] = store.embeddings.embedded_by_id(MODEL_NAME, ["c1"]).values()
    assert embedded.chunk.embedding_text == "A\ntext" and embedded.embedding.tobytes() == VECTOR.tobytes()
    assert store.embeddings.embedded_headers() == {"A"}
    assert store.rankings.queries() == [Query("q1", "what is a?")]
    assert store.rankings.candidates() == {"q1": [Candidate(1, "c1", 0.5)]}
    assert store.rankings.cached_response("key-1") == {"results": []}
    assert store.context_sets.latest()["q1"].passages == ({"rank": 1, "chunk_id": "c1"},)


@pytest.mark.parametrize("commit", [BASELINE, RANKINGS_BY_CANDIDATES, BEFORE_ALEMBIC])
def test_a_database_written_before_migrations_upgrades_in_place(database_url, commit):
    _write_database_of(commit, database_url)
    store = StateStore(database_url)
    try:
        assert _revisions(database_url) == head_revisions()
        _assert_kept(store)
        reranked = store.rankings.rankings()
        if commit == BASELINE:
            # Ranked by retrieval rank, never to be published as reranked: the next rerank run stores them anew.
            assert reranked == {}
        else:
            assert reranked["q1"].candidates_hash == "hash-of-q1"
        # Revision 0002's columns and tables are there and used.
        store.pages.mark_temporarily_redirected("http://d/a")
        assert store.pages.known("docs")["http://d/a"].redirected_since is not None
        assert store.delete_source("docs").chunks == 1
        assert list(store.embeddings.kept(MODEL_NAME, ["A\ntext"])) == ["A\ntext"]
    finally:
        store.dispose()
    assert _schema_differences(database_url) == []


def test_a_database_from_the_last_main_before_migrations_is_stamped_and_left_as_it_was(database_url):
    """Stamped at 0002, it gets only the later revisions' changes: the tables they leave alone are as they were."""
    _write_database_of(BEFORE_ALEMBIC, database_url)
    untouched = set(_schema_of(BEFORE_ALEMBIC).tables) - CHANGED_SINCE_0002
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            before = {name: _columns(connection, name) for name in untouched}
        upgrade_schema(engine)
        with engine.connect() as connection:
            assert {name: _columns(connection, name) for name in untouched} == before
            # 0004's has_text, backfilled from the sections (none: no text), not left unknown.
            assert "has_text" in {column[0] for column in _columns(connection, "pipeline_documents")}
            assert connection.execute(sa.text("SELECT has_text FROM pipeline_documents")).scalars().all() == [False]
            assert current_revisions(connection) == head_revisions()
            assert connection.scalar(sa.text("SELECT count(*) FROM pipeline_reranked")) == 1
    finally:
        engine.dispose()


def test_a_fresh_database_upgrades_from_empty_to_the_schema_module(database_url):
    StateStore(database_url).dispose()
    assert _revisions(database_url) == head_revisions()
    assert _schema_differences(database_url) == []
    engine = sa.create_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {*metadata.tables, VERSION_TABLE}
        # The view exposes every column of the context sets table (a new column needs a new view).
        view_columns = [column["name"] for column in inspector.get_columns("pipeline_latest_context_sets")]
        assert view_columns == [column.name for column in context_sets.columns]
    finally:
        engine.dispose()


def test_upgrading_twice_changes_nothing(database_url):
    _write_database_of(BASELINE, database_url)
    engine = create_state_engine(database_url)
    try:
        upgrade_schema(engine)
        with engine.connect() as connection:
            first = (current_revisions(connection), {name: _columns(connection, name) for name in metadata.tables})
        upgrade_schema(engine)
        with engine.connect() as connection:
            assert (
                current_revisions(connection),
                {name: _columns(connection, name) for name in metadata.tables},
            ) == first
    finally:
        engine.dispose()
    store = StateStore(database_url)
    try:
        _assert_kept(store)
    finally:
        store.dispose()


def test_the_oldest_shapes_are_brought_up_to_the_baseline(database_url):
    """Before 87b399d context sets were one JSON column, and pages kept no links: that code's opening fixed both."""
    _write_database_of(BASELINE, database_url)
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP VIEW pipeline_latest_context_sets"))
            connection.execute(sa.text("DROP TABLE pipeline_context_sets"))
            connection.execute(
                sa.text(
                    "CREATE TABLE pipeline_context_sets (run_id TEXT, query_id TEXT, context_set TEXT, PRIMARY KEY (run_id, query_id))"
                )
            )
            connection.execute(
                sa.text("INSERT INTO pipeline_context_sets VALUES ('run-0', 'q1', :set)"), {"set": json.dumps({})}
            )
            connection.execute(sa.text("ALTER TABLE pipeline_pages DROP COLUMN links"))
    finally:
        engine.dispose()
    store = StateStore(database_url)
    try:
        assert store.pages.known("docs")["http://d/a"].links is None  # fetched in full once to learn them
        assert store.context_sets.latest() == {}  # the next run publishes them again
    finally:
        store.dispose()
    assert _schema_differences(database_url) == []


def test_downgrading_to_nothing_and_upgrading_again_gives_the_same_schema(database_url):
    StateStore(database_url).dispose()
    engine = create_state_engine(database_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert set(sa.inspect(engine).get_table_names()) == {VERSION_TABLE}
        assert sa.inspect(engine).get_view_names() == []
        upgrade_schema(engine)
    finally:
        engine.dispose()
    assert _schema_differences(database_url) == []


def test_dagsters_own_alembic_version_in_the_same_database_is_left_alone(database_url):
    """On Heroku, Dagster's run storage keeps its revision in ``alembic_version`` beside the pipeline's tables."""
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
            connection.execute(sa.text("INSERT INTO alembic_version VALUES ('7f2b1a4ca7a5')"))
        StateStore(database_url).dispose()
        with engine.connect() as connection:
            assert connection.scalars(sa.text("SELECT version_num FROM alembic_version")).all() == ["7f2b1a4ca7a5"]
    finally:
        engine.dispose()
    assert _revisions(database_url) == head_revisions()
    assert _schema_differences(database_url) == []


@pytest.mark.parametrize("commit", [None, BASELINE])
def test_processes_opening_together_migrate_once(database_url, commit):
    """A first run's step processes, or web, worker and release after a deploy, open the store at once."""
    if commit:
        _write_database_of(commit, database_url)
    with ThreadPoolExecutor(max_workers=4) as pool:
        stores = list(pool.map(lambda _: StateStore(database_url), range(4)))
    try:
        assert _revisions(database_url) == head_revisions()
        assert all(store.rankings.rankings() == {} for store in stores)
    finally:
        for store in stores:
            store.dispose()


def test_opening_an_upgraded_sqlite_database_waits_for_no_writer(tmp_path):
    """Step processes open the store while another step holds SQLite's write lock mid-transaction."""
    url = sqlite_url(tmp_path)
    StateStore(url).dispose()
    writer = create_state_engine(url)
    try:
        with writer.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.exec_driver_sql("DELETE FROM pipeline_queries")
            store = StateStore(url)
            assert store.rankings.queries() == []
            store.dispose()
            connection.rollback()
    finally:
        writer.dispose()


def test_opening_an_upgraded_postgres_database_takes_no_lock(postgres_url):
    """The schema lock is for migrating: processes opening at the newest revision never queue behind one."""
    StateStore(postgres_url).dispose()
    holder = sa.create_engine(postgres_url)
    try:
        with holder.connect() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_lock(0x70697065)))
            # Waiting for the lock would fail after 5 s rather than hang.
            store = StateStore(postgres_url + "?options=-c%20lock_timeout%3D5000")
            assert store.rankings.queries() == []
            store.dispose()
            connection.execute(sa.select(sa.func.pg_advisory_unlock(0x70697065)))
    finally:
        holder.dispose()


def _write_embedded_database_at_0002(url: str) -> dict[str, bytes]:
    """A revision-0002 database whose chunks share, lack and left vectors; returns each text's vector."""
    _write_database_of(BEFORE_ALEMBIC, url)
    vectors = {"A\ntext": VECTOR.tobytes(), "gone": (VECTOR * 2).tobytes(), "B\nother": (VECTOR * 3).tobytes()}
    chunk = {"source": "docs", "url": "http://d/a", "title": "A", "heading_path": ["A"], "token_count": 1}
    table = _schema_of(BEFORE_ALEMBIC).tables
    engine = create_state_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                table["pipeline_chunks"].insert(),
                [
                    # c1's text again: one vector for both.
                    {**chunk, "chunk_id": "c2", "text": "text", "embedding_text": "A\ntext", "position": 1,
                     "embedding": vectors["A\ntext"]},
                    # Never embedded, but a deleted chunk of its text left a vector.
                    {**chunk, "chunk_id": "c3", "text": "other", "embedding_text": "B\nother", "position": 2,
                     "embedding": None},
                    {**chunk, "chunk_id": "c4", "text": "new", "embedding_text": "C\nnew", "position": 3,
                     "embedding": None},
                ],
            )  # fmt: skip
            connection.execute(
                table["pipeline_retained_embeddings"].insert(),
                [
                    {
                        "model": MODEL_NAME,
                        "text_hash": text_hash(text),
                        "embedding": vectors[text],
                        "retained_at": MOMENT,
                    }
                    for text in ("gone", "B\nother")
                ],
            )
    finally:
        engine.dispose()
    return vectors


def test_every_stored_vector_moves_to_the_vectors_by_model_with_its_retention(database_url):
    vectors = _write_embedded_database_at_0002(database_url)
    store = StateStore(database_url)
    try:
        engine = store.engine
        with engine.connect() as connection:
            rows = {
                row.text_hash: (row.embedding, row.released_at)
                for row in connection.execute(sa.select(vectors_table).where(vectors_table.c.model == MODEL_NAME))
            }
            assert connection.scalar(sa.text("SELECT count(*) FROM pipeline_vectors")) == 3
            hashes = dict(connection.execute(sa.text("SELECT chunk_id, embedding_hash FROM pipeline_chunks")).all())
        # Chunks keep their text's hash; texts in use hold their vector unreleased, retained ones keep their clock.
        assert hashes == {
            chunk_id: text_hash(text)
            for chunk_id, text in (("c1", "A\ntext"), ("c2", "A\ntext"), ("c3", "B\nother"), ("c4", "C\nnew"))
        }
        assert rows[text_hash("A\ntext")] == (vectors["A\ntext"], None)
        for text in ("gone", "B\nother"):
            blob, released = rows[text_hash(text)]
            assert blob == vectors[text] and released is not None and aware(released) == MOMENT
        [model] = store.embeddings.models().values()
        assert (model.model, model.dimensions) == (MODEL_NAME, 384)
        embedded = store.embeddings.embedded_by_id(MODEL_NAME, ["c1", "c2", "c3", "c4"])
        assert {chunk_id: row.embedding.tobytes() for chunk_id, row in embedded.items()} == {
            "c1": vectors["A\ntext"],
            "c2": vectors["A\ntext"],
            "c3": vectors["B\nother"],
        }
        assert [[item.text for item in window] for window in store.embeddings.iter_pending("docs", MODEL_NAME)] == [
            ["C\nnew"]
        ]
        assert store.embeddings.count_pending("docs", "another-model") == 3
        assert store.embeddings.embedded_headers() == {"A"}
        assert store.rankings.embedding_models() == {"q1": None}
        assert store.context_sets.latest()["q1"].embedding_model is None
    finally:
        store.dispose()
    assert _schema_differences(database_url) == []


def test_downgrading_vectors_by_model_gives_chunks_their_vectors_back(database_url):
    vectors = _write_embedded_database_at_0002(database_url)
    StateStore(database_url).dispose()
    engine = create_state_engine(database_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        with engine.connect() as connection:
            chunks = dict(connection.execute(sa.text("SELECT chunk_id, embedding FROM pipeline_chunks")).all())
            retained = dict(
                connection.execute(sa.text("SELECT text_hash, embedding FROM pipeline_retained_embeddings")).all()
            )
    finally:
        engine.dispose()
    assert {chunk_id: blob and bytes(blob) for chunk_id, blob in chunks.items()} == {
        "c1": vectors["A\ntext"],
        "c2": vectors["A\ntext"],
        "c3": vectors["B\nother"],
        "c4": None,
    }
    assert {digest: bytes(blob) for digest, blob in retained.items()} == {
        text_hash(text): vectors[text] for text in ("gone", "B\nother")
    }
