"""Chunks → vectors: embeddings for the stored chunks and their header lines, and Chroma kept equal to them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.chunking import header_line
from pipeline.embedding import MiniLMEmbedder
from pipeline.store.orphans import orphaned_since
from pipeline.store.records import StoredChunk
from pipeline.store.sql import utcnow
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass
class IndexReport:
    chunks_embedded: int = 0
    chunks_reused: int = 0  # given the retained embedding of a deleted chunk with the same text
    vectors_deleted: int = 0
    vectors_restored: int = 0
    vectors_total: int = 0
    embed_seconds: float = 0.0
    headers_embedded: int = 0
    headers_reused: int = 0
    headers_deleted: int = 0
    header_embed_seconds: float = 0.0
    retained_embeddings_pruned: int = 0

    def metadata(self) -> dict[str, Any]:
        rate = self.chunks_embedded / self.embed_seconds if self.embed_seconds else 0.0
        return {
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "vectors_deleted": self.vectors_deleted,
            "vectors_restored": self.vectors_restored,
            "vectors_total": self.vectors_total,
            "embed_seconds": round(self.embed_seconds, 2),
            "chunks_embedded_per_second": round(rate, 2),
            "headers_embedded": self.headers_embedded,
            "headers_reused": self.headers_reused,
            "headers_deleted": self.headers_deleted,
            "header_embed_seconds": round(self.header_embed_seconds, 2),
            "retained_embeddings_pruned": self.retained_embeddings_pruned,
        }


def chroma_metadata(chunk: StoredChunk) -> dict[str, Any]:
    return {
        "source": chunk.source,
        "url": chunk.url,
        "title": chunk.title,
        "heading_path": " > ".join(chunk.heading_path),
        "token_count": chunk.token_count,
        "position": chunk.position,
    }


def index_chunks(
    store: StateStore,
    vectors: VectorIndex,
    embedder: MiniLMEmbedder,
    source: str,
    *,
    retention: timedelta = timedelta(0),
    save_every: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Embed the source's chunks that have no embedding, then sync Chroma; embeddings that deleted
    chunks left within ``retention`` are reused for the same text instead of embedding it again."""
    report = IndexReport()
    retained_since = utcnow() - retention
    report.retained_embeddings_pruned = store.chunks.prune_retained_embeddings(before=retained_since)
    pending = store.chunks.pending_embedding(source)
    retained = store.chunks.retained_embeddings((item.embedding_text for item in pending), since=retained_since)
    reused = {item.chunk_id: retained[item.embedding_text] for item in pending if item.embedding_text in retained}
    store.chunks.save_embeddings(reused)
    _upsert_stored(store, vectors, reused)
    report.chunks_reused = len(reused)
    pending = [item for item in pending if item.chunk_id not in reused]
    texts = [item.embedding_text for item in pending]
    embedded: dict[str, Any] = {}

    def flush() -> None:
        # Stored first: Chroma is rebuilt from the state store, never the other way round.
        store.chunks.save_embeddings(embedded)
        _upsert_stored(store, vectors, embedded)
        report.chunks_embedded += len(embedded)
        embedded.clear()
        if on_progress:
            on_progress(report.chunks_embedded, len(pending))

    started = time.perf_counter()
    for positions, batch_vectors in embedder.iter_batches(texts):
        for position, vector in zip(positions, batch_vectors, strict=True):
            embedded[pending[position].chunk_id] = vector
        if len(embedded) >= save_every:
            flush()
    if embedded:
        flush()
    report.embed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report.headers_embedded, report.headers_reused, report.headers_deleted = sync_header_embeddings(
        store, embedder, retained_since
    )
    report.header_embed_seconds = time.perf_counter() - started

    report.vectors_deleted, report.vectors_restored, report.vectors_total = sync_vectors(store, vectors, source)
    return report


def sync_header_embeddings(
    store: StateStore, embedder: MiniLMEmbedder, retained_since: datetime
) -> tuple[int, int, int]:
    """Embed each stored chunk's context header line once, for the local scorer; returns (embedded, reused, deleted).

    Headers are shared by a section's chunks (4,184 for the 12,715 chunks of the PostgreSQL
    manual) and short, so this adds a few percent to embedding the chunks. Headers that no
    stored chunk starts with any more are deleted (their embeddings retained like chunks'), and
    a header retained since ``retained_since`` is reused. Every source's headers are kept in one table.
    """
    wanted = {header for text in store.chunks.iter_embedding_texts() if (header := header_line(text))}
    stored = store.chunks.embedded_headers()
    retained = store.chunks.retained_embeddings(wanted - stored, since=retained_since)
    missing = sorted(wanted - stored - retained.keys())
    store.chunks.save_header_embeddings(retained)
    if missing:
        store.chunks.save_header_embeddings(dict(zip(missing, embedder.embed(missing), strict=True)))
    return len(missing), len(retained), store.chunks.delete_header_embeddings(stored - wanted)


def sync_vectors(store: StateStore, vectors: VectorIndex, source: str | None = None) -> tuple[int, int, int]:
    """Make Chroma hold exactly the stored (embedded) chunks; returns (deleted, restored, total).

    Chroma on a Heroku worker's disk is wiped on every restart; this rebuilds it from
    the embeddings in the state store, without re-embedding or re-crawling.
    """
    stored_ids = store.chunks.ids(source)
    indexed_ids = vectors.ids(source)
    deleted = vectors.delete(indexed_ids - stored_ids)
    if source is not None:
        # A page taken over from an orphaned source and changed in the same run leaves its old chunks in
        # Chroma under the orphan's name, which no refresh syncs any more: they go with this sync.
        orphans_indexed = set().union(*(vectors.ids(orphan) for orphan in orphaned_since(store)))
        deleted += vectors.delete(orphans_indexed - store.chunks.ids())
    restored = restore_vectors(store, vectors, stored_ids - indexed_ids)
    return deleted, restored, len(stored_ids)


def restore_vectors(store: StateStore, vectors: VectorIndex, chunk_ids: Iterable[str], batch: int = 1024) -> int:
    """Upsert chunks into Chroma from their stored embeddings; returns how many."""
    wanted = sorted(chunk_ids)
    restored = 0
    for start in range(0, len(wanted), batch):
        rows = store.chunks.embedded_by_id(wanted[start : start + batch])
        restorable = {chunk_id: row.embedding for chunk_id, row in rows.items()}
        _upsert_stored(store, vectors, restorable, {chunk_id: row.chunk for chunk_id, row in rows.items()})
        restored += len(restorable)
    return restored


def _upsert_stored(
    store: StateStore,
    vectors: VectorIndex,
    embeddings: Mapping[str, Any],
    stored: Mapping[str, StoredChunk] | None = None,
) -> None:
    if not embeddings:
        return
    stored = stored if stored is not None else store.chunks.by_id(embeddings)
    ids = [chunk_id for chunk_id in embeddings if chunk_id in stored]
    vectors.upsert(
        ids=ids,
        embeddings=[embeddings[chunk_id] for chunk_id in ids],
        documents=[stored[chunk_id].text for chunk_id in ids],
        metadatas=[chroma_metadata(stored[chunk_id]) for chunk_id in ids],
    )
