"""Durable pipeline state: SQLite in the data directory by default, PostgreSQL from ``DATABASE_URL``.

The state store is the source of truth for everything the pipeline has learned:
crawled pages (with validators for conditional GET), extracted documents, chunks
(with their embeddings), queries, candidates, rerank results and cache, and the
published context sets. Chroma and the lexical index are derived from the
``chunks`` table and can be rebuilt from it without re-crawling or re-embedding.

Every stage reconciles its own table with the one upstream of it, inside
transactions, so a run killed at any point is finished by simply running again.
The tables are defined in :mod:`pipeline.store.schema`; opening a store brings them to
the newest migration (:mod:`pipeline.store.migrate`).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.embedding import MODEL_NAME
from pipeline.store.context_sets import ContextSetStore
from pipeline.store.migrate import upgrade_schema
from pipeline.store.rankings import RankingStore
from pipeline.store.schema import (
    chunks,
    documents,
    header_embeddings,
    pages,
    retained_embeddings,
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


def pack_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unpack_embedding(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _retain_embeddings(connection: Connection, embedded: sa.Select) -> None:
    """Keep the embeddings that ``embedded`` selects as (text, embedding) rows, before they are deleted."""
    now = utcnow()
    rows = {
        text_hash(text): {"model": MODEL_NAME, "text_hash": text_hash(text), "embedding": blob, "retained_at": now}
        for text, blob in connection.execute(embedded)
        if blob is not None
    }
    _upsert(connection, retained_embeddings, list(rows.values()))


@dataclass(frozen=True)
class StoredPage:
    url: str
    source: str
    etag: str | None
    last_modified: str | None
    content_hash: str | None
    links: tuple[str, ...] | None  # None: stored before links were kept
    redirected_since: datetime | None = None


@dataclass(frozen=True)
class StoredChunk:
    chunk_id: str
    source: str
    url: str
    title: str
    heading_path: tuple[str, ...]
    text: str
    embedding_text: str
    token_count: int
    position: int


class StateStore:
    """Typed access to the pipeline tables; one instance per process is enough."""

    def __init__(self, url: str) -> None:
        self.engine = create_state_engine(url)
        upgrade_schema(self.engine)
        self.rankings = RankingStore(self.engine, self.transaction)
        self.context_sets = ContextSetStore(self.engine, self.transaction)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()

    # -- pages ---------------------------------------------------------------

    def known_pages(self, source: str) -> dict[str, StoredPage]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    pages.c.url,
                    pages.c.source,
                    pages.c.etag,
                    pages.c.last_modified,
                    pages.c.content_hash,
                    pages.c.links,
                    pages.c.redirected_since,
                ).where(pages.c.source == source)
            )
            return {
                row.url: StoredPage(
                    row.url,
                    row.source,
                    row.etag,
                    row.last_modified,
                    row.content_hash,
                    links=None if row.links is None else tuple(row.links),
                    redirected_since=row.redirected_since and _aware(row.redirected_since),
                )
                for row in rows
            }

    def page_with_content(self, source: str, content_hash: str, other_than: Container[str]) -> str | None:
        """Another stored page of the source with exactly this content, if any, not one of ``other_than``."""
        query = sa.select(pages.c.url).where(pages.c.source == source, pages.c.content_hash == content_hash)
        with self.engine.connect() as connection:
            return next((url for url in connection.scalars(query.order_by(pages.c.url)) if url not in other_than), None)

    def page_owner(self, url: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.scalar(sa.select(pages.c.source).where(pages.c.url == url))

    def save_page(
        self,
        *,
        url: str,
        source: str,
        final_url: str | None,
        status: int | None,
        content_type: str | None,
        etag: str | None,
        last_modified: str | None,
        content_hash: str | None,
        html: str | None,
        fetched_at: datetime | None,
        links: Sequence[str] = (),
    ) -> None:
        """Record a fetched page and the links to follow from it; ``html=None`` keeps the stored body."""
        row: dict[str, Any] = {
            "url": url,
            "source": source,
            "final_url": final_url,
            "status": status,
            "content_type": content_type,
            "etag": etag,
            "last_modified": last_modified,
            "content_hash": content_hash,
            "fetched_at": fetched_at,
            "last_seen_at": utcnow(),
            "links": list(links),
            "redirected_since": None,
        }
        if html is not None:
            row["html_zlib"] = zlib.compress(html.encode("utf-8"), 6)
        with self.transaction() as connection:
            _upsert(connection, pages, [row])

    def touch_page(
        self,
        url: str,
        *,
        etag: str | None,
        last_modified: str | None,
        fetched_at: datetime | None,
        links: Sequence[str] | None = None,
    ) -> None:
        """A page confirmed unchanged: refresh its validators, last-seen time and (if parsed again) links."""
        values: dict[str, Any] = {"last_seen_at": utcnow(), "fetched_at": fetched_at, "redirected_since": None}
        if links is not None:
            values["links"] = list(links)
        if etag:
            values["etag"] = etag
        if last_modified:
            values["last_modified"] = last_modified
        with self.transaction() as connection:
            connection.execute(sa.update(pages).where(pages.c.url == url).values(**values))

    def mark_temporarily_redirected(self, url: str) -> None:
        """The page answered a temporary redirect: remember since when; body and validators stay."""
        with self.transaction() as connection:
            connection.execute(
                sa.update(pages)
                .where(pages.c.url == url, pages.c.redirected_since.is_(None))
                .values(redirected_since=utcnow())
            )

    def delete_pages(self, urls: Iterable[str]) -> int:
        """Delete stored pages in one transaction; returns how many there were."""
        wanted = list(urls)
        deleted = 0
        with self.transaction() as connection:
            for start in range(0, len(wanted), 500):
                deleted += connection.execute(
                    sa.delete(pages).where(pages.c.url.in_(wanted[start : start + 500]))
                ).rowcount
        return deleted

    def page_count(self, source: str | None = None) -> int:
        return self._count(pages, source)

    # -- documents -------------------------------------------------------------

    def pages_to_extract(self, source: str, extractor_version: str) -> list[str]:
        """URLs whose stored page body has no document extracted from it by this extractor."""
        joined = pages.outerjoin(documents, documents.c.url == pages.c.url)
        query = (
            sa.select(pages.c.url)
            .select_from(joined)
            .where(pages.c.source == source, pages.c.html_zlib.is_not(None))
            .where(
                sa.or_(
                    documents.c.url.is_(None),
                    documents.c.page_hash != pages.c.content_hash,
                    documents.c.extractor_version != extractor_version,
                )
            )
            .order_by(pages.c.url)
        )
        with self.engine.connect() as connection:
            return list(connection.scalars(query))

    def page_html(self, url: str) -> tuple[str, str]:
        """The stored body of a page and the content hash it was stored under."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(pages.c.html_zlib, pages.c.content_hash).where(pages.c.url == url)).one()
        return zlib.decompress(row.html_zlib).decode("utf-8"), row.content_hash

    def save_document(
        self,
        *,
        url: str,
        source: str,
        page_hash: str,
        extractor_version: str,
        title: str,
        sections: list[dict[str, Any]],
        content_hash: str,
    ) -> None:
        row = {
            "url": url,
            "source": source,
            "page_hash": page_hash,
            "extractor_version": extractor_version,
            "title": title,
            "sections": sections,
            "content_hash": content_hash,
            "extracted_at": utcnow(),
        }
        with self.transaction() as connection:
            _upsert(connection, documents, [row])

    def delete_orphan_documents(self, source: str) -> int:
        """Drop documents whose page is gone; returns how many."""
        orphan = sa.and_(documents.c.source == source, ~sa.exists().where(pages.c.url == documents.c.url))
        with self.transaction() as connection:
            return connection.execute(sa.delete(documents).where(orphan)).rowcount

    def documents_to_chunk(self, source: str, chunker_fingerprint: str) -> list[dict[str, Any]]:
        """Documents whose chunks were not produced from their current content and chunker settings."""
        key = documents.c.content_hash + ":" + chunker_fingerprint
        query = (
            sa.select(documents.c.url, documents.c.title, documents.c.sections, documents.c.content_hash)
            .where(documents.c.source == source)
            .where(sa.or_(documents.c.chunked_key.is_(None), documents.c.chunked_key != key))
            .order_by(documents.c.url)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def document_count(self, source: str | None = None) -> int:
        return self._count(documents, source)

    # -- chunks ----------------------------------------------------------------

    def replace_chunks(
        self, *, source: str, url: str, new_chunks: Sequence[StoredChunk], chunked_key: str
    ) -> tuple[int, int]:
        """Make the page's chunks exactly ``new_chunks`` in one transaction.

        Chunks whose ID survives keep their stored embedding, so an edit to one
        section of a page re-embeds only that section. Returns (added, removed).
        """
        new_ids = {chunk.chunk_id for chunk in new_chunks}
        with self.transaction() as connection:
            existing = set(connection.scalars(sa.select(chunks.c.chunk_id).where(chunks.c.url == url)))
            removed = existing - new_ids
            if removed:
                doomed = chunks.c.chunk_id.in_(removed)
                _retain_embeddings(connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(doomed))
                connection.execute(sa.delete(chunks).where(doomed))
            added = [chunk for chunk in new_chunks if chunk.chunk_id not in existing]
            _upsert(connection, chunks, [_chunk_row(chunk) for chunk in added])
            connection.execute(sa.update(documents).where(documents.c.url == url).values(chunked_key=chunked_key))
        return len(added), len(removed)

    def delete_orphan_chunks(self, source: str) -> int:
        orphan = sa.and_(chunks.c.source == source, ~sa.exists().where(documents.c.url == chunks.c.url))
        with self.transaction() as connection:
            _retain_embeddings(connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(orphan))
            return connection.execute(sa.delete(chunks).where(orphan)).rowcount

    def chunks_without_embedding(self, source: str) -> list[tuple[str, str]]:
        """(chunk_id, embedding_text) of chunks never embedded."""
        query = (
            sa.select(chunks.c.chunk_id, chunks.c.embedding_text)
            .where(chunks.c.source == source, chunks.c.embedding.is_(None))
            .order_by(chunks.c.chunk_id)
        )
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]

    def save_embeddings(self, embeddings: Mapping[str, np.ndarray]) -> None:
        if not embeddings:
            return
        statement = (
            sa.update(chunks)
            .where(chunks.c.chunk_id == sa.bindparam("target_id"))
            .values(embedding=sa.bindparam("blob"))
        )
        with self.transaction() as connection:
            connection.execute(
                statement,
                [{"target_id": chunk_id, "blob": pack_embedding(vector)} for chunk_id, vector in embeddings.items()],
            )

    def chunk_ids(self, source: str | None = None) -> set[str]:
        query = sa.select(chunks.c.chunk_id)
        if source is not None:
            query = query.where(chunks.c.source == source)
        with self.engine.connect() as connection:
            return set(connection.scalars(query))

    def chunk_sources(self) -> dict[str, str]:
        """chunk_id → owning source of every stored chunk."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(chunks.c.chunk_id, chunks.c.source))
            return {chunk_id: source for chunk_id, source in rows}

    def chunks_by_id(
        self, chunk_ids: Iterable[str], *, with_embeddings: bool = False
    ) -> dict[str, tuple[StoredChunk, np.ndarray | None]]:
        wanted = list(dict.fromkeys(chunk_ids))
        result: dict[str, tuple[StoredChunk, np.ndarray | None]] = {}
        columns = [chunks.c[name] for name in _CHUNK_FIELDS]
        if with_embeddings:
            columns.append(chunks.c.embedding)
        with self.engine.connect() as connection:
            # Bounded IN lists: SQLite caps bound parameters per statement.
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                for row in connection.execute(sa.select(*columns).where(chunks.c.chunk_id.in_(batch))):
                    chunk = _stored_chunk(row)
                    vector = unpack_embedding(row.embedding) if with_embeddings and row.embedding is not None else None
                    result[chunk.chunk_id] = (chunk, vector)
        return result

    def iter_chunks(self, source: str | None = None) -> Iterator[StoredChunk]:
        query = sa.select(*[chunks.c[name] for name in _CHUNK_FIELDS]).order_by(chunks.c.chunk_id)
        if source is not None:
            query = query.where(chunks.c.source == source)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                yield _stored_chunk(row)

    def chunk_count(self, source: str | None = None) -> int:
        return self._count(chunks, source)

    def iter_embedded_texts(self) -> Iterator[tuple[str, np.ndarray]]:
        """(text, embedding) of every embedded chunk and header line: what the local rerank service reuses."""
        with self.engine.connect() as connection:
            embedded = sa.select(chunks.c.embedding_text, chunks.c.embedding).where(chunks.c.embedding.is_not(None))
            for text, blob in connection.execute(embedded):
                yield text, unpack_embedding(blob)
            for text, blob in connection.execute(sa.select(header_embeddings.c.header, header_embeddings.c.embedding)):
                yield text, unpack_embedding(blob)

    def embedded_headers(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.scalars(sa.select(header_embeddings.c.header)))

    def iter_embedding_texts(self) -> Iterator[str]:
        """Every stored chunk's embedding_text (all sources)."""
        with self.engine.connect() as connection:
            yield from connection.scalars(sa.select(chunks.c.embedding_text))

    def save_header_embeddings(self, embeddings: Mapping[str, np.ndarray]) -> None:
        if embeddings:
            with self.transaction() as connection:
                _upsert(
                    connection,
                    header_embeddings,
                    [{"header": header, "embedding": pack_embedding(vector)} for header, vector in embeddings.items()],
                )

    def delete_header_embeddings(self, headers: Iterable[str]) -> int:
        wanted = list(headers)
        with self.transaction() as connection:
            for start in range(0, len(wanted), 500):
                doomed = header_embeddings.c.header.in_(wanted[start : start + 500])
                _retain_embeddings(
                    connection, sa.select(header_embeddings.c.header, header_embeddings.c.embedding).where(doomed)
                )
                connection.execute(sa.delete(header_embeddings).where(doomed))
        return len(wanted)

    def retained_embeddings(self, texts: Iterable[str], *, since: datetime) -> dict[str, np.ndarray]:
        """Embeddings kept since ``since`` of any of ``texts`` (by their exact text), text -> vector."""
        by_hash = {text_hash(text): text for text in texts}
        hashes = list(by_hash)
        found: dict[str, np.ndarray] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(hashes), 500):
                query = sa.select(retained_embeddings.c.text_hash, retained_embeddings.c.embedding).where(
                    retained_embeddings.c.model == MODEL_NAME,
                    retained_embeddings.c.text_hash.in_(hashes[start : start + 500]),
                    retained_embeddings.c.retained_at >= since,
                )
                for digest, blob in connection.execute(query):
                    found[by_hash[digest]] = unpack_embedding(blob)
        return found

    def prune_retained_embeddings(self, *, before: datetime) -> int:
        """Forget embeddings retained before ``before``; returns how many."""
        with self.transaction() as connection:
            return connection.execute(
                sa.delete(retained_embeddings).where(retained_embeddings.c.retained_at < before)
            ).rowcount

    # -- source removal and health --------------------------------------------

    def delete_source(self, source: str) -> dict[str, int]:
        """Delete a source's pages, documents and chunks in one transaction; returns the counts deleted.

        Chroma and the lexical index are synced from the state store afterwards, never the other
        way round, so a crash between the two leaves extra index entries that the next sync drops.
        """
        with self.transaction() as connection:
            _retain_embeddings(
                connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(chunks.c.source == source)
            )
            return {
                "chunks": connection.execute(sa.delete(chunks).where(chunks.c.source == source)).rowcount,
                "documents": connection.execute(sa.delete(documents).where(documents.c.source == source)).rowcount,
                "pages": connection.execute(sa.delete(pages).where(pages.c.source == source)).rowcount,
            }

    def page_text_presence(self, source: str) -> dict[str, bool]:
        """Per stored page body of the source: whether its extracted document has any text.

        A page without a document (its extraction failed) counts as having none.
        """
        joined = pages.outerjoin(documents, documents.c.url == pages.c.url)
        query = (
            sa.select(pages.c.url, documents.c.sections)
            .select_from(joined)
            .where(pages.c.source == source, pages.c.html_zlib.is_not(None))
        )
        with self.engine.connect() as connection:
            return {
                url: bool(sections) and any(section["text"].strip() for section in sections)
                for url, sections in connection.execute(query)
            }

    # -------------------------------------------------------------------------

    def _count(self, table: sa.Table, source: str | None) -> int:
        query = sa.select(sa.func.count()).select_from(table)
        if source is not None:
            query = query.where(table.c.source == source)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)


_CHUNK_FIELDS = (
    "chunk_id",
    "source",
    "url",
    "title",
    "heading_path",
    "text",
    "embedding_text",
    "token_count",
    "position",
)


def _chunk_row(chunk: StoredChunk) -> dict[str, Any]:
    row = {name: getattr(chunk, name) for name in _CHUNK_FIELDS}
    row["heading_path"] = list(chunk.heading_path)
    return row


def _stored_chunk(row: Any) -> StoredChunk:
    values = {name: getattr(row, name) for name in _CHUNK_FIELDS}
    values["heading_path"] = tuple(values["heading_path"])
    return StoredChunk(**values)
