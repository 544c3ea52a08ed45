"""Durable pipeline state: SQLite in the data directory by default, PostgreSQL from ``DATABASE_URL``.

The state store is the source of truth for everything the pipeline has learned:
crawled pages (with validators for conditional GET), extracted documents, chunks
(with their embeddings), queries, candidates, rerank results and cache, and the
published context sets. Each stage has a small store of its own on the
:class:`StateStore`: ``pages`` (:mod:`pipeline.store.pages`) and ``chunks``
(:mod:`pipeline.store.chunks`); the records they hand out are in :mod:`pipeline.store.records`.
Chroma and the lexical index are derived from the ``chunks`` table and can be rebuilt from
it without re-crawling or re-embedding.

Every stage reconciles its own table with the one upstream of it, inside
transactions, so a run killed at any point is finished by simply running again.
The tables are defined in :mod:`pipeline.store.schema`; opening a store brings them to
the newest migration (:mod:`pipeline.store.migrate`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.chunks import ChunkStore
from pipeline.store.migrate import upgrade_schema
from pipeline.store.pages import PageStore
from pipeline.store.records import SourceDeletion
from pipeline.store.schema import (
    CONTEXT_SET_FIELDS,
    candidates,
    context_sets,
    latest_context_sets_view,
    queries,
    rerank_cache,
    reranked,
)
from pipeline.store.sql import aware as _aware
from pipeline.store.sql import upsert as _upsert
from pipeline.store.sql import utcnow


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
            # WAL lets Dagster's step processes read while one of them writes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


@dataclass(frozen=True)
class ContextSetRun:
    run_id: str
    created_at: datetime
    queries: int
    reranked: int


class StateStore:
    """Typed access to the pipeline tables; one instance per process is enough."""

    def __init__(self, url: str) -> None:
        self.engine = create_state_engine(url)
        upgrade_schema(self.engine)
        self.pages = PageStore(self)
        self.chunks = ChunkStore(self)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()

    # -- queries, candidates, rerank -----------------------------------------

    def replace_queries(self, items: Sequence[tuple[str, str]]) -> None:
        with self.transaction() as connection:
            connection.execute(sa.delete(queries))
            if items:
                connection.execute(
                    sa.insert(queries),
                    [{"query_id": qid, "query": text, "position": i} for i, (qid, text) in enumerate(items)],
                )

    def load_queries(self) -> list[tuple[str, str]]:
        with self.engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    sa.select(queries.c.query_id, queries.c.query).order_by(queries.c.position)
                )
            ]

    def replace_candidates(self, ranked: Mapping[str, Sequence[tuple[str, float]]]) -> None:
        """Store each query's retrieval ranking: [(chunk_id, score), ...] best first."""
        rows = [
            {"query_id": query_id, "retrieval_rank": rank, "chunk_id": chunk_id, "retrieval_score": score}
            for query_id, ranking in ranked.items()
            for rank, (chunk_id, score) in enumerate(ranking, start=1)
        ]
        with self.transaction() as connection:
            connection.execute(sa.delete(candidates))
            if rows:
                connection.execute(sa.insert(candidates), rows)

    def load_candidates(self) -> dict[str, list[tuple[int, str, float]]]:
        """query_id → [(retrieval_rank, chunk_id, score), ...] in rank order."""
        result: dict[str, list[tuple[int, str, float]]] = {}
        query = sa.select(candidates).order_by(candidates.c.query_id, candidates.c.retrieval_rank)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                result.setdefault(row.query_id, []).append((row.retrieval_rank, row.chunk_id, row.retrieval_score))
        return result

    def replace_reranked(self, rows: Sequence[Mapping[str, Any]]) -> None:
        stamped = [{**row, "updated_at": utcnow()} for row in rows]
        with self.transaction() as connection:
            connection.execute(sa.delete(reranked))
            if stamped:
                connection.execute(sa.insert(reranked), stamped)

    def load_reranked(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as connection:
            return {row.query_id: dict(row._mapping) for row in connection.execute(sa.select(reranked))}

    def cache_get(self, cache_key: str) -> dict | None:
        with self.engine.connect() as connection:
            return connection.scalar(sa.select(rerank_cache.c.response).where(rerank_cache.c.cache_key == cache_key))

    def cache_put(self, cache_key: str, response: dict) -> None:
        with self.transaction() as connection:
            _upsert(connection, rerank_cache, [{"cache_key": cache_key, "response": response, "created_at": utcnow()}])

    # -- context sets ----------------------------------------------------------

    def save_context_sets(self, run_id: str, sets: Sequence[Mapping[str, Any]], *, keep_runs: int) -> int:
        """Store one run's context sets (replacing any of the same run) and keep only the newest
        ``keep_runs`` runs; returns how many older runs were deleted."""
        if keep_runs < 1:
            raise ValueError(f"keep_runs must be at least 1, got {keep_runs}")
        now = utcnow()
        rows = [
            {
                "run_id": run_id,
                "position": position,
                "created_at": now,
                **{name: context_set[name] for name in CONTEXT_SET_FIELDS},
                "reranked": bool(context_set["reranked"]),
            }
            for position, context_set in enumerate(sets)
        ]
        newest_runs = (
            sa.select(context_sets.c.run_id)
            .group_by(context_sets.c.run_id)
            .order_by(sa.func.max(context_sets.c.created_at).desc(), context_sets.c.run_id.desc())
            .limit(keep_runs)
        )
        with self.transaction() as connection:
            connection.execute(sa.delete(context_sets).where(context_sets.c.run_id == run_id))
            if rows:
                connection.execute(sa.insert(context_sets), rows)
            kept = list(connection.scalars(newest_runs))
            older = sa.select(sa.func.count(sa.distinct(context_sets.c.run_id))).where(
                context_sets.c.run_id.not_in(kept)
            )
            deleted = int(connection.scalar(older))
            if deleted:
                connection.execute(sa.delete(context_sets).where(context_sets.c.run_id.not_in(kept)))
        return deleted

    def latest_context_sets(self) -> dict[str, dict[str, Any]]:
        """The newest run's context set of each query (the ``pipeline_latest_context_sets`` view), in file order."""
        view = latest_context_sets_view
        query = sa.select(*[view.c[name] for name in CONTEXT_SET_FIELDS]).order_by(view.c.position)
        with self.engine.connect() as connection:
            return {row.query_id: dict(row._mapping) for row in connection.execute(query)}

    def context_set_runs(self) -> list[ContextSetRun]:
        """The runs whose context sets are kept, newest first."""
        query = (
            sa.select(
                context_sets.c.run_id,
                sa.func.max(context_sets.c.created_at).label("created_at"),
                sa.func.count().label("queries"),
                sa.func.sum(sa.case((context_sets.c.reranked, 1), else_=0)).label("reranked"),
            )
            .group_by(context_sets.c.run_id)
            .order_by(sa.desc("created_at"), context_sets.c.run_id.desc())
        )
        with self.engine.connect() as connection:
            return [
                ContextSetRun(row.run_id, _aware(row.created_at), row.queries, int(row.reranked))
                for row in connection.execute(query)
            ]

    # -- source removal and health --------------------------------------------

    def delete_source(self, source: str) -> SourceDeletion:
        """Delete a source's pages, documents and chunks in one transaction; returns the counts deleted.

        Chroma and the lexical index are synced from the state store afterwards, never the other
        way round, so a crash between the two leaves extra index entries that the next sync drops.
        """
        with self.transaction() as connection:
            chunks = self.chunks.delete_source(connection, source)
            documents, pages = self.pages.delete_source(connection, source)
        return SourceDeletion(pages=pages, documents=documents, chunks=chunks)

    def billed_search_units(self) -> int:
        """Search units billed by the latest rerank run (cache hits bill nothing)."""
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.coalesce(sa.func.sum(reranked.c.search_units), 0))).scalar_one()
            )
