"""Vectors by embedding model and embedded text, header-line vectors, and how long unused vectors are kept.

A vector is stored under (model, sha256 of the exact text embedded): chunks of one text share it,
and it outlives the last chunk that uses it by PIPELINE_VECTOR_RETENTION_DAYS, so text that comes
back (a page restored, a source renamed, an edit undone) is not embedded again. Each model has its
own vectors: switching to another model embeds each distinct text once, and switching back embeds
nothing while the earlier model's vectors are kept. A model that has not been the configured one
for longer than the retention is deleted with its vectors, so the database (1 GB on Heroku's
essential-0 plan) does not carry two models' vectors for ever.

Header-line vectors (the local rerank stand-in's heading feature) are always all-MiniLM-L6-v2's, in
their own table by header; a header deleted from it leaves its vector here like a chunk's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.embedding import MODEL_NAME
from pipeline.store.chunks import CHUNK_FIELDS, stored_chunk, text_hash
from pipeline.store.records import EmbeddedChunk, EmbeddingModel, PendingText, VectorPruning
from pipeline.store.schema import chunks, embedding_models, header_embeddings, vectors
from pipeline.store.sql import BATCH, aware, insert_missing, upsert, utcnow

if TYPE_CHECKING:
    from pipeline.store.state import StateStore

# Chunk rows read per pending window: a window's texts are embedded (and sorted by length) together.
PENDING_WINDOW = 2048


def pack_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unpack_embedding(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def _used() -> sa.Exists:
    """Whether a stored chunk has the vector's text."""
    return sa.exists().where(chunks.c.embedding_hash == vectors.c.text_hash)


def _vector_of(model: str) -> sa.Exists:
    """Whether the chunk's text has a vector of ``model``."""
    return sa.exists().where(vectors.c.model == model, vectors.c.text_hash == chunks.c.embedding_hash)


class EmbeddingStore:
    """Vectors of chunk texts and header lines; reached as ``StateStore.embeddings``."""

    def __init__(self, database: StateStore) -> None:
        self._database = database

    # -- models ----------------------------------------------------------------

    def configure(self, model: str) -> None:
        """Record that ingest embeds with ``model`` now: its retention runs from the last time it was."""
        with self._database.transaction() as connection:
            upsert(connection, embedding_models, [{"model": model, "configured_at": utcnow()}])

    def models(self) -> dict[str, EmbeddingModel]:
        with self._database.engine.connect() as connection:
            return {
                row.model: EmbeddingModel(row.model, row.dimensions, aware(row.configured_at))
                for row in connection.execute(sa.select(embedding_models))
            }

    def count(self, model: str | None = None) -> int:
        """Vectors stored (of ``model``), in use or kept."""
        query = sa.select(sa.func.count()).select_from(vectors)
        if model is not None:
            query = query.where(vectors.c.model == model)
        with self._database.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    # -- chunk vectors ---------------------------------------------------------

    def count_pending(self, source: str, model: str) -> int:
        """Distinct texts of the source's chunks that have no vector of ``model``."""
        query = sa.select(sa.func.count(sa.distinct(chunks.c.embedding_hash))).where(
            chunks.c.source == source, ~_vector_of(model)
        )
        with self._database.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def iter_pending(self, source: str, model: str, *, window: int = PENDING_WINDOW) -> Iterator[list[PendingText]]:
        """The source's chunk texts without a vector of ``model``, each once, a window at a time.

        Windows follow the text hash, each read when the previous one is done with, so a text
        the caller could not embed is not offered again, and a text saved meanwhile is not offered.
        """
        last = ""
        while True:
            query = (
                sa.select(chunks.c.embedding_hash, chunks.c.embedding_text)
                .where(chunks.c.source == source, chunks.c.embedding_hash > last, ~_vector_of(model))
                .order_by(chunks.c.embedding_hash)
                .limit(window)
            )
            with self._database.engine.connect() as connection:
                rows = connection.execute(query).all()
            if not rows:
                return
            yield list(
                {row.embedding_hash: PendingText(row.embedding_hash, row.embedding_text) for row in rows}.values()
            )
            last = rows[-1].embedding_hash

    def save(self, model: str, embedded: Mapping[str, np.ndarray]) -> None:
        """Store vectors of ``model`` by text hash, in use (a vector already stored is kept as it was)."""
        rows = [
            {"text_hash": digest, "embedding": pack_embedding(vector), "released_at": None}
            for digest, vector in embedded.items()
        ]
        with self._database.transaction() as connection:
            _insert_vectors(connection, model, rows)

    def embedded_chunks(self, model: str, source: str, text_hashes: Iterable[str]) -> list[EmbeddedChunk]:
        """The source's chunks of these texts, with their vectors of ``model``."""
        return list(self._embedded(model, chunks.c.embedding_hash, text_hashes, chunks.c.source == source))

    def embedded_by_id(self, model: str, chunk_ids: Iterable[str]) -> dict[str, EmbeddedChunk]:
        """The stored chunks among ``chunk_ids`` that have a vector of ``model``, with it."""
        return {row.chunk.chunk_id: row for row in self._embedded(model, chunks.c.chunk_id, chunk_ids)}

    def iter_embedded_texts(self) -> Iterator[tuple[str, np.ndarray]]:
        """(text, all-MiniLM-L6-v2 vector) of every stored chunk and header line that has one: the vectors
        the local rerank stand-in, which scores with that model whatever model embeds the chunks, reuses."""
        local = sa.select(chunks.c.embedding_text, vectors.c.embedding).join(
            vectors, sa.and_(vectors.c.model == MODEL_NAME, vectors.c.text_hash == chunks.c.embedding_hash)
        )
        with self._database.engine.connect() as connection:
            for text, blob in connection.execute(local):
                yield text, unpack_embedding(blob)
            for text, blob in connection.execute(sa.select(header_embeddings.c.header, header_embeddings.c.embedding)):
                yield text, unpack_embedding(blob)

    def kept(self, model: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``model`` of any of ``texts`` (by their exact text), text → vector."""
        by_hash = {text_hash(text): text for text in texts}
        hashes = list(by_hash)
        found: dict[str, np.ndarray] = {}
        with self._database.engine.connect() as connection:
            for start in range(0, len(hashes), BATCH):
                query = sa.select(vectors.c.text_hash, vectors.c.embedding).where(
                    vectors.c.model == model, vectors.c.text_hash.in_(hashes[start : start + BATCH])
                )
                for digest, blob in connection.execute(query):
                    found[by_hash[digest]] = unpack_embedding(blob)
        return found

    def _embedded(self, model: str, key: Any, values: Iterable[str], *where: Any) -> Iterator[EmbeddedChunk]:
        wanted = list(dict.fromkeys(values))
        joined = sa.select(*(chunks.c[name] for name in CHUNK_FIELDS), vectors.c.embedding).join(
            vectors, sa.and_(vectors.c.model == model, vectors.c.text_hash == chunks.c.embedding_hash)
        )
        with self._database.engine.connect() as connection:
            # Bounded IN lists: SQLite caps bound parameters per statement.
            for start in range(0, len(wanted), BATCH):
                query = joined.where(key.in_(wanted[start : start + BATCH]), *where)
                for row in connection.execute(query):
                    yield EmbeddedChunk(stored_chunk(row), unpack_embedding(row.embedding))

    # -- header lines (all-MiniLM-L6-v2) ---------------------------------------

    def embedded_headers(self) -> set[str]:
        with self._database.engine.connect() as connection:
            return set(connection.scalars(sa.select(header_embeddings.c.header)))

    def save_header_embeddings(self, embedded: Mapping[str, np.ndarray]) -> None:
        """Store header lines' vectors; a kept copy of one (its header deleted earlier) moves back here."""
        if not embedded:
            return
        hashes = [text_hash(header) for header in embedded]
        with self._database.transaction() as connection:
            upsert(
                connection,
                header_embeddings,
                [{"header": header, "embedding": pack_embedding(vector)} for header, vector in embedded.items()],
            )
            for start in range(0, len(hashes), BATCH):
                connection.execute(
                    sa.delete(vectors).where(
                        vectors.c.model == MODEL_NAME,
                        vectors.c.text_hash.in_(hashes[start : start + BATCH]),
                        vectors.c.released_at.is_not(None),
                        ~_used(),
                    )
                )

    def delete_header_embeddings(self, headers: Iterable[str]) -> int:
        """Delete these headers' vectors, keeping each among the model's vectors for the retention period."""
        wanted = list(headers)
        now = utcnow()
        with self._database.transaction() as connection:
            for start in range(0, len(wanted), BATCH):
                doomed = header_embeddings.c.header.in_(wanted[start : start + BATCH])
                rows = connection.execute(
                    sa.select(header_embeddings.c.header, header_embeddings.c.embedding).where(doomed)
                )
                _insert_vectors(
                    connection,
                    MODEL_NAME,
                    [{"text_hash": text_hash(header), "embedding": blob, "released_at": now} for header, blob in rows],
                )
                connection.execute(sa.delete(header_embeddings).where(doomed))
        return len(wanted)

    # -- retention -------------------------------------------------------------

    def prune(self, *, configured: str, retention: timedelta) -> VectorPruning:
        """Start the retention of vectors no chunk uses, end it for those a chunk uses again, and delete
        vectors unused for longer than ``retention`` and every vector of a model other than ``configured``
        not configured for longer than that."""
        now = utcnow()
        cutoff = now - retention
        with self._database.transaction() as connection:
            released = connection.execute(
                sa.update(vectors).where(vectors.c.released_at.is_(None), ~_used()).values(released_at=now)
            ).rowcount
            connection.execute(
                sa.update(vectors).where(vectors.c.released_at.is_not(None), _used()).values(released_at=None)
            )
            stale = tuple(
                connection.scalars(
                    sa.select(embedding_models.c.model)
                    .where(embedding_models.c.model != configured, embedding_models.c.configured_at < cutoff)
                    .order_by(embedding_models.c.model)
                )
            )
            pruned = 0
            if stale:
                pruned += connection.execute(sa.delete(vectors).where(vectors.c.model.in_(stale))).rowcount
                connection.execute(sa.delete(embedding_models).where(embedding_models.c.model.in_(stale)))
            pruned += connection.execute(sa.delete(vectors).where(vectors.c.released_at < cutoff)).rowcount
        return VectorPruning(released=released, pruned=pruned, models=stale)


def _insert_vectors(connection: Connection, model: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``model``'s vectors not stored yet, and the model's row (with its dimensions) if missing."""
    if not rows:
        return
    dimensions = len(rows[0]["embedding"]) // 4
    insert_missing(
        connection, embedding_models, [{"model": model, "dimensions": dimensions, "configured_at": utcnow()}]
    )
    connection.execute(
        sa.update(embedding_models)
        .where(embedding_models.c.model == model, embedding_models.c.dimensions.is_(None))
        .values(dimensions=dimensions)
    )
    insert_missing(connection, vectors, [{"model": model, **row} for row in rows])
