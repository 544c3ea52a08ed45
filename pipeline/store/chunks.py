"""The chunks stage's store: the chunks of every page, each with the hash of the text it is embedded from.

Vectors live in :mod:`pipeline.store.embeddings`, keyed by embedding model and that hash, so
deleting a chunk deletes no vector: the vector stays for a chunk of the same text that comes back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.store.records import ChunkChanges, StoredChunk
from pipeline.store.schema import chunks, documents
from pipeline.store.sql import BATCH, count_rows, in_batches, upsert

if TYPE_CHECKING:
    from pipeline.store.state import StateStore


def text_hash(text: str) -> str:
    """What a vector is stored under: sha256 hex of the exact text embedded, UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChunkStore:
    """Chunks; reached as ``StateStore.chunks``."""

    def __init__(self, database: StateStore) -> None:
        self._database = database

    # -- chunks ----------------------------------------------------------------

    def replace(self, *, source: str, url: str, new_chunks: Sequence[StoredChunk], chunked_key: str) -> ChunkChanges:
        """Make the page's chunks exactly ``new_chunks`` in one transaction.

        Chunks whose ID survives are left as they are, and the vectors of every chunk's text are
        kept, so an edit to one section of a page re-embeds only that section.
        """
        new_ids = {chunk.chunk_id for chunk in new_chunks}
        with self._database.transaction() as connection:
            existing = set(connection.scalars(sa.select(chunks.c.chunk_id).where(chunks.c.url == url)))
            removed = existing - new_ids
            if removed:
                connection.execute(sa.delete(chunks).where(chunks.c.chunk_id.in_(removed)))
            added = [chunk for chunk in new_chunks if chunk.chunk_id not in existing]
            upsert(connection, chunks, [_chunk_row(chunk) for chunk in added])
            connection.execute(sa.update(documents).where(documents.c.url == url).values(chunked_key=chunked_key))
        return ChunkChanges(added=len(added), removed=len(removed))

    def delete_orphans(self, source: str) -> int:
        """Drop chunks whose document is gone; returns how many."""
        orphan = sa.and_(chunks.c.source == source, ~sa.exists().where(documents.c.url == chunks.c.url))
        with self._database.transaction() as connection:
            return connection.execute(sa.delete(chunks).where(orphan)).rowcount

    @staticmethod
    def delete_source(connection: Connection, source: str) -> int:
        """Delete the source's chunks inside the caller's transaction; returns how many."""
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
        columns = [chunks.c[name] for name in CHUNK_FIELDS]
        return {row.chunk_id: stored_chunk(row) for row in self._rows(columns, chunk_ids)}

    def iterate(self, source: str | None = None) -> Iterator[StoredChunk]:
        """Every stored chunk (of ``source``), in chunk ID order, read a batch at a time."""
        query = sa.select(*[chunks.c[name] for name in CHUNK_FIELDS])
        if source is not None:
            query = query.where(chunks.c.source == source)
        for rows in in_batches(self._database.engine, query, chunks.c.chunk_id, BATCH):
            yield from map(stored_chunk, rows)

    def iter_index_rows(self) -> Iterator[tuple[str, str, str]]:
        """``(chunk_id, source, embedding_text)`` of every stored chunk, in chunk ID order, a batch at a time:
        what the lexical index is built from, without the rest of each row."""
        query = sa.select(chunks.c.chunk_id, chunks.c.source, chunks.c.embedding_text)
        for rows in in_batches(self._database.engine, query, chunks.c.chunk_id, BATCH):
            yield from ((row.chunk_id, row.source, row.embedding_text) for row in rows)

    def count(self, source: str | None = None) -> int:
        return count_rows(self._database.engine, chunks, source)

    def page_sizes(self) -> dict[str, int]:
        """Stored chunks per page URL."""
        query = sa.select(chunks.c.url, sa.func.count()).group_by(chunks.c.url)
        with self._database.engine.connect() as connection:
            return {url: count for url, count in connection.execute(query)}

    def iter_embedding_texts(self) -> Iterator[str]:
        """Every stored chunk's embedding_text (all sources), a batch at a time."""
        return (text for _, _, text in self.iter_index_rows())

    def _rows(self, columns: list[Any], chunk_ids: Iterable[str]) -> Iterator[Any]:
        wanted = list(dict.fromkeys(chunk_ids))
        with self._database.engine.connect() as connection:
            # Bounded IN lists: SQLite caps bound parameters per statement.
            for start in range(0, len(wanted), BATCH):
                batch = wanted[start : start + BATCH]
                yield from connection.execute(sa.select(*columns).where(chunks.c.chunk_id.in_(batch)))


# The columns a StoredChunk is read from.
CHUNK_FIELDS = (
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
    row = {name: getattr(chunk, name) for name in CHUNK_FIELDS}
    row["heading_path"] = list(chunk.heading_path)
    row["embedding_hash"] = text_hash(chunk.embedding_text)
    return row


def stored_chunk(row: Any) -> StoredChunk:
    """The chunk of a row holding the CHUNK_FIELDS columns."""
    values = {name: getattr(row, name) for name in CHUNK_FIELDS}
    values["heading_path"] = tuple(values["heading_path"])
    return StoredChunk(**values)
