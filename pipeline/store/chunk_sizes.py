"""The token-limit check's store: what it counted per chunk, so that each run counts only new chunks.

Counting a chunk (cl100k tokens and word pieces) costs about 150 µs; every other question the
check asks (how many chunks are over a limit, the largest, examples) is one SQL aggregate over
the stored counts, a few microseconds a chunk. Rows are keyed by chunk ID, and a chunk ID hashes
everything the chunk's embedding text is made of, so a count stays true while its chunk exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.schema import chunk_sizes, chunks
from pipeline.store.sql import in_batches, upsert


@dataclass(frozen=True)
class ChunkSize:
    chunk_id: str
    tokens: int
    word_pieces: int
    characters: int


@dataclass(frozen=True)
class SizeSummary:
    """The stored counts of the chunks of some sources, against three limits."""

    chunks: int
    largest_tokens: int
    largest_word_pieces: int
    largest_characters: int
    over_tokens: int
    over_word_pieces: int
    over_characters: int
    examples_over_tokens: tuple[ChunkSize, ...]
    examples_over_word_pieces: tuple[ChunkSize, ...]
    examples_over_characters: tuple[ChunkSize, ...]


class ChunkSizeStore:
    """Reached as ``StateStore.chunk_sizes``."""

    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._transaction = transaction

    def uncounted(self, sources: Sequence[str], measure: str, batch: int) -> Iterator[list[tuple[str, str]]]:
        """(chunk ID, embedding text) of the sources' chunks without a count by ``measure``, ``batch``
        at a time in chunk ID order; a batch may be saved before the next is asked for."""
        joined = chunks.outerjoin(chunk_sizes, chunk_sizes.c.chunk_id == chunks.c.chunk_id)
        query = (
            sa.select(chunks.c.chunk_id, chunks.c.embedding_text)
            .select_from(joined)
            .where(chunks.c.source.in_(sources))
            .where(sa.or_(chunk_sizes.c.chunk_id.is_(None), chunk_sizes.c.measure != measure))
        )
        for rows in in_batches(self._engine, query, chunks.c.chunk_id, batch):
            yield [(row.chunk_id, row.embedding_text) for row in rows]

    def save(self, sizes: Sequence[ChunkSize], measure: str) -> None:
        rows = [
            {
                "chunk_id": size.chunk_id,
                "measure": measure,
                "tokens": size.tokens,
                "word_pieces": size.word_pieces,
                "characters": size.characters,
            }
            for size in sizes
        ]
        with self._transaction() as connection:
            upsert(connection, chunk_sizes, rows)

    def prune(self) -> int:
        """Forget the counts of chunks no longer stored; returns how many."""
        gone = ~sa.exists().where(chunks.c.chunk_id == chunk_sizes.c.chunk_id)
        with self._transaction() as connection:
            return connection.execute(sa.delete(chunk_sizes).where(gone)).rowcount

    def summary(
        self,
        sources: Sequence[str],
        measure: str,
        *,
        max_tokens: int,
        max_word_pieces: int,
        max_characters: int,
        examples: int,
    ) -> SizeSummary:
        """Counts of the sources' chunks by ``measure`` (chunks without one are left out) against the limits."""
        joined = chunks.join(chunk_sizes, chunk_sizes.c.chunk_id == chunks.c.chunk_id)
        counted = sa.and_(chunks.c.source.in_(sources), chunk_sizes.c.measure == measure)
        limits = (
            (chunk_sizes.c.tokens, max_tokens),
            (chunk_sizes.c.word_pieces, max_word_pieces),
            (chunk_sizes.c.characters, max_characters),
        )
        totals = sa.select(
            sa.func.count(),
            *(sa.func.coalesce(sa.func.max(column), 0) for column, _ in limits),
            *(sa.func.coalesce(sa.func.sum(sa.case((column > limit, 1), else_=0)), 0) for column, limit in limits),
        ).select_from(joined)
        sizes = sa.select(
            chunks.c.chunk_id, chunk_sizes.c.tokens, chunk_sizes.c.word_pieces, chunk_sizes.c.characters
        ).select_from(joined)
        with self._engine.connect() as connection:
            figures = [int(figure) for figure in connection.execute(totals.where(counted)).one()]
            tokens, word_pieces, characters = (
                tuple(
                    ChunkSize(*row)
                    for row in connection.execute(
                        sizes.where(counted, column > limit).order_by(column.desc(), chunks.c.chunk_id).limit(examples)
                    )
                )
                for column, limit in limits
            )
        return SizeSummary(
            chunks=figures[0],
            largest_tokens=figures[1],
            largest_word_pieces=figures[2],
            largest_characters=figures[3],
            over_tokens=figures[4],
            over_word_pieces=figures[5],
            over_characters=figures[6],
            examples_over_tokens=tokens,
            examples_over_word_pieces=word_pieces,
            examples_over_characters=characters,
        )
