"""Durable pipeline state: SQLite in the data directory by default, PostgreSQL from ``DATABASE_URL``.

The state store is the source of truth for everything the pipeline has learned:
crawled pages (with validators for conditional GET), extracted documents, chunks,
their vectors of each embedding model, queries, candidates, rerank results and cache,
the published context sets, and the answers and their cache. Each stage has a small store of its own on the
:class:`StateStore`: ``pages`` (:mod:`pipeline.store.pages`), ``chunks``
(:mod:`pipeline.store.chunks`), ``chunk_sizes`` (:mod:`pipeline.store.chunk_sizes`),
``embeddings`` (:mod:`pipeline.store.embeddings`), ``rankings`` (:mod:`pipeline.store.rankings`),
``context_sets`` (:mod:`pipeline.store.context_sets`) and ``answers`` (:mod:`pipeline.store.answers`);
the records they hand out are in :mod:`pipeline.store.records`. Chroma and the lexical index are
derived from the chunks and vectors tables and can be rebuilt from them without re-crawling or
re-embedding.

Every stage reconciles its own table with the one upstream of it, inside
transactions, so a run killed at any point is finished by simply running again.
The tables are defined in :mod:`pipeline.store.schema`; opening a store brings them to
the newest migration (:mod:`pipeline.store.migrate`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.answers import AnswerStore
from pipeline.store.chunk_sizes import ChunkSizeStore
from pipeline.store.chunks import ChunkStore
from pipeline.store.context_sets import ContextSetStore
from pipeline.store.embeddings import EmbeddingStore
from pipeline.store.migrate import upgrade_schema
from pipeline.store.pages import PageStore
from pipeline.store.rankings import RankingStore
from pipeline.store.records import SourceDeletion


def normalize_database_url(url: str) -> str:
    """Heroku hands out ``postgres://`` URLs, a scheme SQLAlchemy no longer accepts."""
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://") :]
    return url


def sqlite_url(data_dir: str | Path) -> str:
    path = Path(data_dir).resolve() / "state.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def state_url(database_url: str | None, data_dir: str | Path) -> str:
    """The state store's URL: ``database_url`` when set, else SQLite under ``data_dir``."""
    return database_url or sqlite_url(data_dir)


def create_state_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=60000")
            _enter_wal_mode(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _enter_wal_mode(cursor: sqlite3.Cursor, attempts: int = 20) -> None:
    """WAL lets Dagster's step processes read while one of them writes.

    Switching a new database to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting out the busy timeout, to a connection that would deadlock
    waiting: processes opening a new database together (a first run's steps, or web, worker and
    release after a deploy) can meet that. Once the database is in WAL mode the pragma only reads it.
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class StateStore:
    """Typed access to the pipeline tables; one instance per process is enough."""

    def __init__(self, url: str) -> None:
        self.engine = create_state_engine(url)
        upgrade_schema(self.engine)
        self.pages = PageStore(self)
        self.chunks = ChunkStore(self)
        self.embeddings = EmbeddingStore(self)
        self.chunk_sizes = ChunkSizeStore(self.engine, self.transaction)
        self.rankings = RankingStore(self.engine, self.transaction)
        self.context_sets = ContextSetStore(self.engine, self.transaction)
        self.answers = AnswerStore(self.engine, self.transaction)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()

    def delete_source(self, source: str) -> SourceDeletion:
        """Delete a source's pages, documents and chunks in one transaction; returns the counts deleted.

        Chroma and the lexical index are synced from the state store afterwards, never the other
        way round, so a crash between the two leaves extra index entries that the next sync drops.
        """
        with self.transaction() as connection:
            chunks = self.chunks.delete_source(connection, source)
            documents, pages = self.pages.delete_source(connection, source)
        return SourceDeletion(pages=pages, documents=documents, chunks=chunks)
