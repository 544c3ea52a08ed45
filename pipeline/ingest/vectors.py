"""Chunks → vectors: embeddings for the stored chunks and their header lines, and Chroma kept equal to them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from pipeline.chunking import header_line
from pipeline.embedding import MODEL_NAME, Embedder, MiniLMEmbedder
from pipeline.inference import InferenceConfigurationError, InferenceError
from pipeline.store.embeddings import PENDING_WINDOW
from pipeline.store.orphans import orphaned_since
from pipeline.store.records import EmbeddedChunk, StoredChunk
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass
class IndexReport:
    embedding_model: str
    texts_embedded: int = 0  # distinct texts the embedder embedded, each saved with its vector
    chunks_embedded: int = 0  # the source's chunks indexed with those vectors
    # Chunks indexed from vectors already stored (no embedding): text a chunk had within the retention
    # (a page back, a switch back to a model), text of another source, or a wiped collection restored.
    vectors_restored: int = 0
    vectors_deleted: int = 0
    vectors_total: int = 0
    embed_seconds: float = 0.0
    headers_embedded: int = 0
    headers_reused: int = 0
    headers_deleted: int = 0
    header_embed_seconds: float = 0.0
    vectors_released: int = 0  # vectors whose last chunk went: kept for the retention period from now
    vectors_pruned: int = 0
    models_pruned: tuple[str, ...] = ()
    collections_dropped: tuple[str, ...] = ()
    # Windows of texts the embedder failed, by error code (never the message: it is the server's text).
    embedding_errors: Counter[str] = field(default_factory=Counter)
    configuration_error: bool = False  # the embedder refused the key or model: retrying cannot help
    texts_pending: int = 0  # the source's texts still without a vector after a failure

    @property
    def complete(self) -> bool:
        return not self.embedding_errors

    def failure(self, source: str) -> str:
        """Why the run is incomplete, for the step's failure: counts and error codes, nothing else."""
        errors = ", ".join(f"{code} ×{count}" for code, count in sorted(self.embedding_errors.items()))
        return (
            f"embedding {source} with {self.embedding_model} failed ({errors}): {self.texts_pending} texts have no "
            f"vector yet; {self.texts_embedded} were embedded and saved, and the next run embeds only what is left"
        )

    def metadata(self) -> dict[str, Any]:
        rate = self.texts_embedded / self.embed_seconds if self.embed_seconds else 0.0
        return {
            "embedding_model": self.embedding_model,
            "texts_embedded": self.texts_embedded,
            "chunks_embedded": self.chunks_embedded,
            "vectors_restored": self.vectors_restored,
            "vectors_deleted": self.vectors_deleted,
            "vectors_total": self.vectors_total,
            "embed_seconds": round(self.embed_seconds, 2),
            "texts_embedded_per_second": round(rate, 2),
            "headers_embedded": self.headers_embedded,
            "headers_reused": self.headers_reused,
            "headers_deleted": self.headers_deleted,
            "header_embed_seconds": round(self.header_embed_seconds, 2),
            "vectors_released": self.vectors_released,
            "vectors_pruned": self.vectors_pruned,
            "models_pruned": ", ".join(self.models_pruned) or "none",
            "collections_dropped": ", ".join(self.collections_dropped) or "none",
            "embedding_errors": dict(self.embedding_errors),
            "texts_pending": self.texts_pending,
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
    embedder: Embedder,
    source: str,
    *,
    header_embedder: MiniLMEmbedder | None = None,
    retention: timedelta = timedelta(0),
    save_every: int = 256,
    window: int = PENDING_WINDOW,
    on_progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Embed the source's chunk texts that have no vector of the embedder's model, then sync Chroma.

    Vectors are kept by model and text: a text that any chunk, of any source, had within
    ``retention`` is not embedded again, nor is a text twice. Vectors unused for longer than
    ``retention``, and the vectors of models not configured for that long, are deleted first.
    Header lines are embedded only with ``header_embedder`` (the local model the rerank stand-in's
    heading feature uses): ingest with a remote embedder never loads the local model.

    Texts are handed to the embedder ``window`` at a time (the local model sorts each window by
    length). An embedder that fails (:class:`pipeline.inference.InferenceError`, after its own
    retries) fails only the window it was embedding: what it embedded before is saved and indexed,
    the rest of that window stays pending for the next run, the next window is tried, and the report
    says so (``complete`` is False). A configuration error (a refused key, an unknown model) ends the
    embedding, since every request would fail alike.
    """
    if vectors.model != embedder.model:
        raise ValueError(f"the collection holds {vectors.model!r} vectors, not the embedder's {embedder.model!r}")
    report = IndexReport(embedder.model)
    store.embeddings.configure(embedder.model)
    pruning = store.embeddings.prune(configured=embedder.model, retention=retention)
    report.vectors_released, report.vectors_pruned, report.models_pruned = (
        pruning.released,
        pruning.pruned,
        pruning.models,
    )
    report.collections_dropped = tuple(vectors.drop_collections(pruning.models))
    started = time.perf_counter()
    _embed_pending(store, vectors, embedder, source, report, save_every, window, on_progress)
    report.embed_seconds = time.perf_counter() - started
    if header_embedder is not None:
        started = time.perf_counter()
        report.headers_embedded, report.headers_reused, report.headers_deleted = sync_header_embeddings(
            store, header_embedder
        )
        report.header_embed_seconds = time.perf_counter() - started
    report.vectors_deleted, report.vectors_restored, report.vectors_total = sync_vectors(store, vectors, source)
    return report


def _embed_pending(
    store: StateStore,
    vectors: VectorIndex,
    embedder: Embedder,
    source: str,
    report: IndexReport,
    save_every: int,
    window: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    model = embedder.model
    total = store.embeddings.count_pending(source, model)
    embedded: dict[str, np.ndarray] = {}

    def flush() -> None:
        # Stored first: Chroma is rebuilt from the state store, never the other way round.
        store.embeddings.save(model, embedded)
        indexed = store.embeddings.embedded_chunks(model, source, embedded)
        _upsert(vectors, indexed)
        report.texts_embedded += len(embedded)
        report.chunks_embedded += len(indexed)
        embedded.clear()
        if on_progress:
            on_progress(report.texts_embedded, total)

    try:
        for pending in store.embeddings.iter_pending(source, model, window=window):
            try:
                for positions, batch_vectors in embedder.iter_document_batches([item.text for item in pending]):
                    for position, vector in zip(positions, batch_vectors, strict=True):
                        embedded[pending[position].text_hash] = vector
                    if len(embedded) >= save_every:
                        flush()
            except InferenceError as error:
                report.embedding_errors[error.code] += 1
                if isinstance(error, InferenceConfigurationError):
                    report.configuration_error = True
                    break
    finally:
        # Whatever stops the embedding, what was embedded is kept.
        if embedded:
            flush()
    if report.embedding_errors:
        report.texts_pending = store.embeddings.count_pending(source, model)


def sync_header_embeddings(store: StateStore, embedder: MiniLMEmbedder) -> tuple[int, int, int]:
    """Embed each stored chunk's context header line once, for the local scorer; returns (embedded, reused, deleted).

    Headers are shared by a section's chunks (4,184 for the 12,715 chunks of the PostgreSQL
    manual) and short, so this adds a few percent to embedding the chunks. Headers that no
    stored chunk starts with any more are deleted (their vectors kept like chunks'), and a
    header whose vector is still kept is reused. Every source's headers are kept in one table.
    """
    wanted = {header for text in store.chunks.iter_embedding_texts() if (header := header_line(text))}
    stored = store.embeddings.embedded_headers()
    kept = store.embeddings.kept(MODEL_NAME, wanted - stored)
    missing = sorted(wanted - stored - kept.keys())
    store.embeddings.save_header_embeddings(kept)
    if missing:
        store.embeddings.save_header_embeddings(dict(zip(missing, embedder.embed(missing), strict=True)))
    return len(missing), len(kept), store.embeddings.delete_header_embeddings(stored - wanted)


def sync_vectors(store: StateStore, vectors: VectorIndex, source: str | None = None) -> tuple[int, int, int]:
    """Make the model's collection hold exactly the stored chunks with a vector of its model; returns
    (deleted, restored, total).

    Chroma on a Heroku worker's disk is wiped on every restart; this rebuilds it from
    the vectors in the state store, without re-embedding or re-crawling.
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
    """Upsert chunks into the collection from their stored vectors of its model; returns how many."""
    wanted = sorted(chunk_ids)
    restored = 0
    for start in range(0, len(wanted), batch):
        rows = store.embeddings.embedded_by_id(vectors.model, wanted[start : start + batch]).values()
        _upsert(vectors, rows)
        restored += len(rows)
    return restored


def _upsert(vectors: VectorIndex, rows: Collection[EmbeddedChunk]) -> None:
    if rows:
        vectors.upsert(
            ids=[row.chunk.chunk_id for row in rows],
            embeddings=[row.embedding for row in rows],
            documents=[row.chunk.text for row in rows],
            metadatas=[chroma_metadata(row.chunk) for row in rows],
        )
