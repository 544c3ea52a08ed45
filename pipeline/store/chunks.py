"""The chunks stage's store: chunks with their embeddings, header-line embeddings, and retained embeddings.

Retained embeddings are those of deleted chunks and header lines, kept for a while by their
exact text so that a chunk coming back (a page restored, a source renamed) is not embedded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.embedding import MODEL_NAME
from pipeline.store.records import ChunkChanges, EmbeddedChunk, PendingEmbedding, StoredChunk
from pipeline.store.schema import chunks, documents, header_embeddings, retained_embeddings
from pipeline.store.sql import BATCH, count_rows, upsert, utcnow

if TYPE_CHECKING:
    from pipeline.store.state import StateStore


def pack_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unpack_embedding(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChunkStore:
    """Chunks and embeddings; reached as ``StateStore.chunks``."""

    def __init__(self, database: StateStore) -> None:
        self._database = database

    # -- chunks ----------------------------------------------------------------

    def replace(self, *, source: str, url: str, new_chunks: Sequence[StoredChunk], chunked_key: str) -> ChunkChanges:
        """Make the page's chunks exactly ``new_chunks`` in one transaction.

        Chunks whose ID survives keep their stored embedding, so an edit to one
        section of a page re-embeds only that section.
        """
        new_ids = {chunk.chunk_id for chunk in new_chunks}
        with self._database.transaction() as connection:
            existing = set(connection.scalars(sa.select(chunks.c.chunk_id).where(chunks.c.url == url)))
            removed = existing - new_ids
            if removed:
                doomed = chunks.c.chunk_id.in_(removed)
                _retain_embeddings(connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(doomed))
                connection.execute(sa.delete(chunks).where(doomed))
            added = [chunk for chunk in new_chunks if chunk.chunk_id not in existing]
            upsert(connection, chunks, [_chunk_row(chunk) for chunk in added])
            connection.execute(sa.update(documents).where(documents.c.url == url).values(chunked_key=chunked_key))
        return ChunkChanges(added=len(added), removed=len(removed))

    def delete_orphans(self, source: str) -> int:
        """Drop chunks whose document is gone (keeping their embeddings for a while); returns how many."""
        orphan = sa.and_(chunks.c.source == source, ~sa.exists().where(documents.c.url == chunks.c.url))
        with self._database.transaction() as connection:
            _retain_embeddings(connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(orphan))
            return connection.execute(sa.delete(chunks).where(orphan)).rowcount

    @staticmethod
    def delete_source(connection: Connection, source: str) -> int:
        """Delete the source's chunks inside the caller's transaction, keeping their embeddings; returns how many."""
        _retain_embeddings(
            connection, sa.select(chunks.c.embedding_text, chunks.c.embedding).where(chunks.c.source == source)
        )
        return connection.execute(sa.delete(chunks).where(chunks.c.source == source)).rowcount

    def ids(self, source: str | None = None) -> set[str]:
        query = sa.select(chunks.c.chunk_id)
        if source is not None:
            query = query.where(chunks.c.source == source)
        with self._database.engine.connect() as connection:
            return set(connection.scalars(query))

    def sources(self) -> dict[str, str]:
        """chunk_id → owning source of every stored chunk."""
        with self._database.engine.connect() as connection:
            rows = connection.execute(sa.select(chunks.c.chunk_id, chunks.c.source))
            return {chunk_id: source for chunk_id, source in rows}

    def by_id(self, chunk_ids: Iterable[str]) -> dict[str, StoredChunk]:
        """The stored chunks among ``chunk_ids``; IDs not stored are left out."""
        columns = [chunks.c[name] for name in _CHUNK_FIELDS]
        return {row.chunk_id: _stored_chunk(row) for row in self._rows(columns, chunk_ids)}

    def embedded_by_id(self, chunk_ids: Iterable[str]) -> dict[str, EmbeddedChunk]:
        """The stored chunks among ``chunk_ids`` that have an embedding, with it."""
        columns = [*(chunks.c[name] for name in _CHUNK_FIELDS), chunks.c.embedding]
        return {
            row.chunk_id: EmbeddedChunk(_stored_chunk(row), unpack_embedding(row.embedding))
            for row in self._rows(columns, chunk_ids)
            if row.embedding is not None
        }

    def iterate(self, source: str | None = None) -> Iterator[StoredChunk]:
        """Every stored chunk (of ``source``), in chunk ID order."""
        query = sa.select(*[chunks.c[name] for name in _CHUNK_FIELDS]).order_by(chunks.c.chunk_id)
        if source is not None:
            query = query.where(chunks.c.source == source)
        with self._database.engine.connect() as connection:
            for row in connection.execute(query):
                yield _stored_chunk(row)

    def count(self, source: str | None = None) -> int:
        return count_rows(self._database.engine, chunks, source)

    # -- embeddings ------------------------------------------------------------

    def pending_embedding(self, source: str) -> list[PendingEmbedding]:
        """The source's chunks never embedded."""
        query = (
            sa.select(chunks.c.chunk_id, chunks.c.embedding_text)
            .where(chunks.c.source == source, chunks.c.embedding.is_(None))
            .order_by(chunks.c.chunk_id)
        )
        with self._database.engine.connect() as connection:
            return [PendingEmbedding(row.chunk_id, row.embedding_text) for row in connection.execute(query)]

    def save_embeddings(self, embeddings: Mapping[str, np.ndarray]) -> None:
        if not embeddings:
            return
        statement = (
            sa.update(chunks)
            .where(chunks.c.chunk_id == sa.bindparam("target_id"))
            .values(embedding=sa.bindparam("blob"))
        )
        with self._database.transaction() as connection:
            connection.execute(
                statement,
                [{"target_id": chunk_id, "blob": pack_embedding(vector)} for chunk_id, vector in embeddings.items()],
            )

    def iter_embedded_texts(self) -> Iterator[tuple[str, np.ndarray]]:
        """(text, embedding) of every embedded chunk and header line: what the local rerank service reuses."""
        with self._database.engine.connect() as connection:
            embedded = sa.select(chunks.c.embedding_text, chunks.c.embedding).where(chunks.c.embedding.is_not(None))
            for text, blob in connection.execute(embedded):
                yield text, unpack_embedding(blob)
            for text, blob in connection.execute(sa.select(header_embeddings.c.header, header_embeddings.c.embedding)):
                yield text, unpack_embedding(blob)

    def iter_embedding_texts(self) -> Iterator[str]:
        """Every stored chunk's embedding_text (all sources)."""
        with self._database.engine.connect() as connection:
            yield from connection.scalars(sa.select(chunks.c.embedding_text))

    def embedded_headers(self) -> set[str]:
        with self._database.engine.connect() as connection:
            return set(connection.scalars(sa.select(header_embeddings.c.header)))

    def save_header_embeddings(self, embeddings: Mapping[str, np.ndarray]) -> None:
        if embeddings:
            with self._database.transaction() as connection:
                upsert(
                    connection,
                    header_embeddings,
                    [{"header": header, "embedding": pack_embedding(vector)} for header, vector in embeddings.items()],
                )

    def delete_header_embeddings(self, headers: Iterable[str]) -> int:
        wanted = list(headers)
        with self._database.transaction() as connection:
            for start in range(0, len(wanted), BATCH):
                doomed = header_embeddings.c.header.in_(wanted[start : start + BATCH])
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
        with self._database.engine.connect() as connection:
            for start in range(0, len(hashes), BATCH):
                query = sa.select(retained_embeddings.c.text_hash, retained_embeddings.c.embedding).where(
                    retained_embeddings.c.model == MODEL_NAME,
                    retained_embeddings.c.text_hash.in_(hashes[start : start + BATCH]),
                    retained_embeddings.c.retained_at >= since,
                )
                for digest, blob in connection.execute(query):
                    found[by_hash[digest]] = unpack_embedding(blob)
        return found

    def prune_retained_embeddings(self, *, before: datetime) -> int:
        """Forget embeddings retained before ``before``; returns how many."""
        with self._database.transaction() as connection:
            return connection.execute(
                sa.delete(retained_embeddings).where(retained_embeddings.c.retained_at < before)
            ).rowcount

    def _rows(self, columns: list[Any], chunk_ids: Iterable[str]) -> Iterator[Any]:
        wanted = list(dict.fromkeys(chunk_ids))
        with self._database.engine.connect() as connection:
            # Bounded IN lists: SQLite caps bound parameters per statement.
            for start in range(0, len(wanted), BATCH):
                batch = wanted[start : start + BATCH]
                yield from connection.execute(sa.select(*columns).where(chunks.c.chunk_id.in_(batch)))


def _retain_embeddings(connection: Connection, embedded: sa.Select) -> None:
    """Keep the embeddings that ``embedded`` selects as (text, embedding) rows, before they are deleted."""
    now = utcnow()
    rows = {
        text_hash(text): {"model": MODEL_NAME, "text_hash": text_hash(text), "embedding": blob, "retained_at": now}
        for text, blob in connection.execute(embedded)
        if blob is not None
    }
    upsert(connection, retained_embeddings, list(rows.values()))


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
