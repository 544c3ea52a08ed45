"""Ingestion stages: crawl results → pages → documents → chunks → vectors.

Each stage reconciles its table in the state store with the stage upstream of it,
so it only does work for what changed and a run interrupted anywhere is completed
by running again (the approach of LangChain's indexing API record manager, applied
per stage):

- ``record_crawl`` stores new and changed page bodies, refreshes validators of
  unchanged pages, and deletes pages the crawler reports gone or out of scope, but only
  once the crawl finished and those removals pass the deletion guard
  (``pipeline/removal_guard.py``). A failed fetch never deletes anything, nor does a
  temporary redirect.
- ``extract_pages`` extracts only pages whose body (or the extractor) changed.
- ``chunk_documents`` rechunks only documents whose text (or the chunker settings)
  changed; chunks that survive an edit keep their embeddings.
- ``index_chunks`` embeds chunks that have no embedding yet (reusing the embedding a
  deleted chunk of the same text left, when it is recent enough), then makes the Chroma
  collection hold exactly the stored chunks: vanished IDs are deleted, missing ones
  restored from stored embeddings (no re-embedding after Chroma is wiped).
- ``sync_lexical`` (``pipeline/store/lexical.py``) does the same for the BM25 index,
  and ``check_index_consistency`` proves both hold exactly the stored chunks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.chunking import ChunkingConfig, chunk_document, header_line
from pipeline.crawl.crawler import PageResult
from pipeline.embedding import MAX_WORD_PIECES, MODEL_NAME, MiniLMEmbedder
from pipeline.extract import EXTRACTOR_VERSION, Document, Section, extract_document
from pipeline.removal_guard import RemovalLimits, check_removals
from pipeline.store.lexical import LexicalIndex
from pipeline.store.orphans import adopt_pages, orphaned_page_urls, orphaned_since
from pipeline.store.state import StateStore, StoredChunk, utcnow
from pipeline.store.vectors import VectorIndex

FETCHED_OUTCOMES = {"new", "changed", "unchanged", "not_modified"}


@dataclass
class CrawlReport:
    outcomes: Counter = field(default_factory=Counter)
    failures_by_reason: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    removals_by_reason: Counter = field(default_factory=Counter)
    bytes_downloaded: int = 0
    pages_taken_over: int = 0

    @property
    def pages_fetched(self) -> int:
        return sum(self.outcomes[outcome] for outcome in FETCHED_OUTCOMES)

    @property
    def pages_deleted(self) -> int:
        return self.outcomes["gone"] + self.outcomes["removed"]

    def metadata(self) -> dict[str, Any]:
        return {
            "pages_fetched": self.pages_fetched,
            "pages_new": self.outcomes["new"],
            "pages_changed": self.outcomes["changed"],
            "pages_not_modified": self.outcomes["not_modified"] + self.outcomes["unchanged"],
            "pages_deleted": self.pages_deleted,
            "pages_temporarily_redirected": self.outcomes["temporarily_redirected"],
            "pages_failed": self.outcomes["failed"],
            "pages_skipped": self.outcomes["skipped"],
            "bytes_downloaded": self.bytes_downloaded,
            "pages_taken_over": self.pages_taken_over,
        }


def record_crawl(
    store: StateStore, source: str, results: Iterable[PageResult], limits: RemovalLimits = RemovalLimits()
) -> CrawlReport:
    """Persist each crawl result as it arrives, except removals: those are applied once the crawl
    finished, if they pass the deletion guard; otherwise ``RemovalBlocked`` is raised and nothing
    is deleted (what was fetched is kept).

    A URL an orphaned source holds (one dropped from the sources file: renamed, say) is taken
    over before its result is recorded, so its page, chunks and embeddings carry on under ``source``
    (and count among the pages it had for the guard).
    """
    report = CrawlReport()
    stored_before = store.page_count(source)
    removals: dict[str, str] = {}  # url -> reason
    adoptable = orphaned_page_urls(store)
    for result in results:
        report.bytes_downloaded += result.bytes_downloaded
        if result.url in adoptable:
            adoptable.discard(result.url)
            report.pages_taken_over += adopt_pages(store, source, [result.url])
        outcome = result.outcome
        if outcome in ("new", "changed"):
            owner = store.page_owner(result.url)
            # A page about to be removed is no duplicate: a page that moved (301) arrives as its old URL
            # removed, then its content under the new URL.
            not_duplicates = removals.keys() | {result.url}
            duplicate = store.page_with_content(source, result.content_hash, other_than=not_duplicates)
            if owner is not None and owner != source:
                # A page reachable from two sources is indexed once, under the first.
                outcome = "skipped"
                _record_failure(report, result.url, "owned_by_other_source", owner)
            elif duplicate is not None:
                # The same page under two URLs (``/`` and ``/index.html``) would rank twice.
                outcome = "skipped"
                _record_failure(report, result.url, "duplicate_content", duplicate)
                if owner is not None:
                    removals[result.url] = "duplicate_content"
            else:
                store.save_page(
                    url=result.url,
                    source=source,
                    final_url=result.final_url,
                    status=result.status,
                    content_type=result.content_type,
                    etag=result.etag,
                    last_modified=result.last_modified,
                    content_hash=result.content_hash,
                    html=result.html,
                    fetched_at=result.fetched_at,
                    links=result.links,
                )
        elif outcome in ("unchanged", "not_modified"):
            store.touch_page(
                result.url,
                etag=result.etag,
                last_modified=result.last_modified,
                fetched_at=result.fetched_at,
                # A 304 carries no body, so the stored links stand.
                links=result.links if outcome == "unchanged" else None,
            )
        elif outcome == "temporarily_redirected":
            store.mark_temporarily_redirected(result.url)
        elif outcome in ("gone", "removed"):
            if store.page_owner(result.url) == source:
                removals[result.url] = result.reason or outcome
            else:
                # Not a page of this source: a broken link (404) or a URL newly out of reach, not a deletion.
                outcome = "skipped"
                _record_failure(report, result.url, result.reason or "gone")
        elif outcome in ("failed", "skipped"):
            _record_failure(report, result.url, result.reason or outcome)
        report.outcomes[outcome] += 1
    report.removals_by_reason.update(removals.values())
    check_removals(source, stored_before + report.pages_taken_over, report.removals_by_reason, limits)
    store.delete_pages(removals)
    return report


def _record_failure(report: CrawlReport, url: str, reason: str, detail: str | None = None) -> None:
    report.failures_by_reason[reason] += 1
    report.failures.append((url, f"{reason} ({detail})" if detail else reason))


@dataclass
class ExtractReport:
    extracted: int = 0
    empty: int = 0
    deleted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    total_documents: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "documents_extracted": self.extracted,
            "documents_without_text": self.empty,
            "documents_deleted": self.deleted,
            "extraction_errors": len(self.errors),
            "documents_total": self.total_documents,
        }


def extract_pages(store: StateStore, source: str) -> ExtractReport:
    report = ExtractReport()
    report.deleted = store.delete_orphan_documents(source)
    for url in store.pages_to_extract(source, EXTRACTOR_VERSION):
        html, page_hash = store.page_html(url)
        try:
            document = extract_document(html, url)
        except Exception as error:  # noqa: BLE001 - one malformed page must not stop the others
            report.errors.append((url, f"{type(error).__name__}: {error}"))
            continue
        if not document.text.strip():
            report.empty += 1
        store.save_document(
            url=url,
            source=source,
            page_hash=page_hash,
            extractor_version=EXTRACTOR_VERSION,
            title=document.title,
            sections=[{"heading_path": list(s.heading_path), "text": s.text} for s in document.sections],
            content_hash=document.content_hash(),
        )
        report.extracted += 1
    report.total_documents = store.document_count(source)
    return report


@dataclass
class ChunkReport:
    documents_chunked: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    total_chunks: int = 0
    max_token_count: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "documents_chunked": self.documents_chunked,
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "chunks_total": self.total_chunks,
            "max_chunk_tokens": self.max_token_count,
        }


def chunk_documents(store: StateStore, source: str, config: ChunkingConfig, embedder: MiniLMEmbedder) -> ChunkReport:
    """Rechunk changed documents; every chunk fits the embedding model's word-piece window.

    About 1% of 200-token chunks of code-heavy docs exceed MiniLM's 256 word pieces
    and would be silently truncated when embedded, so the chunker splits those further.
    """
    report = ChunkReport()

    def fits(text: str) -> bool:
        return embedder.word_piece_counts([text])[0] <= MAX_WORD_PIECES

    # The window is part of the key: a different model window must rechunk.
    fingerprint = f"{config.fingerprint()}:{MODEL_NAME}/{MAX_WORD_PIECES}"
    report.chunks_removed += store.delete_orphan_chunks(source)
    for row in store.documents_to_chunk(source, fingerprint):
        document = Document(
            url=row["url"],
            title=row["title"],
            sections=tuple(Section(tuple(s["heading_path"]), s["text"]) for s in row["sections"]),
        )
        stored = [
            StoredChunk(
                chunk_id=chunk.chunk_id,
                source=source,
                url=chunk.url,
                title=chunk.title,
                heading_path=chunk.heading_path,
                text=chunk.text,
                embedding_text=chunk.embedding_text,
                token_count=chunk.token_count,
                position=chunk.position,
            )
            for chunk in chunk_document(document, config, fits=fits)
        ]
        added, removed = store.replace_chunks(
            source=source, url=document.url, new_chunks=stored, chunked_key=f"{row['content_hash']}:{fingerprint}"
        )
        report.documents_chunked += 1
        report.chunks_added += added
        report.chunks_removed += removed
        report.max_token_count = max([report.max_token_count, *(chunk.token_count for chunk in stored)])
    report.total_chunks = store.chunk_count(source)
    return report


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
    report.retained_embeddings_pruned = store.prune_retained_embeddings(before=retained_since)
    pending = store.chunks_without_embedding(source)
    retained = store.retained_embeddings((text for _, text in pending), since=retained_since)
    reused = {chunk_id: retained[text] for chunk_id, text in pending if text in retained}
    store.save_embeddings(reused)
    _upsert_stored(store, vectors, reused)
    report.chunks_reused = len(reused)
    pending = [(chunk_id, text) for chunk_id, text in pending if chunk_id not in reused]
    texts = [text for _, text in pending]
    embedded: dict[str, Any] = {}

    def flush() -> None:
        # Stored first: Chroma is rebuilt from the state store, never the other way round.
        store.save_embeddings(embedded)
        _upsert_stored(store, vectors, embedded)
        report.chunks_embedded += len(embedded)
        embedded.clear()
        if on_progress:
            on_progress(report.chunks_embedded, len(pending))

    started = time.perf_counter()
    for positions, batch_vectors in embedder.iter_batches(texts):
        for position, vector in zip(positions, batch_vectors, strict=True):
            embedded[pending[position][0]] = vector
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
    wanted = {header for text in store.iter_embedding_texts() if (header := header_line(text))}
    stored = store.embedded_headers()
    retained = store.retained_embeddings(wanted - stored, since=retained_since)
    missing = sorted(wanted - stored - retained.keys())
    store.save_header_embeddings(retained)
    if missing:
        store.save_header_embeddings(dict(zip(missing, embedder.embed(missing), strict=True)))
    return len(missing), len(retained), store.delete_header_embeddings(stored - wanted)


def sync_vectors(store: StateStore, vectors: VectorIndex, source: str | None = None) -> tuple[int, int, int]:
    """Make Chroma hold exactly the stored (embedded) chunks; returns (deleted, restored, total).

    Chroma on a Heroku worker's disk is wiped on every restart; this rebuilds it from
    the embeddings in the state store, without re-embedding or re-crawling.
    """
    stored_ids = store.chunk_ids(source)
    indexed_ids = vectors.ids(source)
    deleted = vectors.delete(indexed_ids - stored_ids)
    if source is not None:
        # A page taken over from an orphaned source and changed in the same run leaves its old chunks in
        # Chroma under the orphan's name, which no refresh syncs any more: they go with this sync.
        orphans_indexed = set().union(*(vectors.ids(orphan) for orphan in orphaned_since(store)))
        deleted += vectors.delete(orphans_indexed - store.chunk_ids())
    restored = restore_vectors(store, vectors, stored_ids - indexed_ids)
    return deleted, restored, len(stored_ids)


def restore_vectors(store: StateStore, vectors: VectorIndex, chunk_ids: Iterable[str], batch: int = 1024) -> int:
    """Upsert chunks into Chroma from their stored embeddings; returns how many."""
    wanted = sorted(chunk_ids)
    restored = 0
    for start in range(0, len(wanted), batch):
        rows = store.chunks_by_id(wanted[start : start + batch], with_embeddings=True)
        restorable = {chunk_id: vector for chunk_id, (_, vector) in rows.items() if vector is not None}
        _upsert_stored(store, vectors, restorable, rows)
        restored += len(restorable)
    return restored


def _upsert_stored(
    store: StateStore,
    vectors: VectorIndex,
    embeddings: Mapping[str, Any],
    rows: Mapping[str, tuple[StoredChunk, Any]] | None = None,
) -> None:
    if not embeddings:
        return
    rows = rows if rows is not None else store.chunks_by_id(embeddings)
    ids = [chunk_id for chunk_id in embeddings if chunk_id in rows]
    vectors.upsert(
        ids=ids,
        embeddings=[embeddings[chunk_id] for chunk_id in ids],
        documents=[rows[chunk_id][0].text for chunk_id in ids],
        metadatas=[chroma_metadata(rows[chunk_id][0]) for chunk_id in ids],
    )


@dataclass(frozen=True)
class IndexConsistency:
    """How the Chroma and lexical indexes differ from the stored chunks of one source (or all)."""

    stored: int
    missing_from_chroma: frozenset[str]
    extra_in_chroma: frozenset[str]
    missing_from_lexical: frozenset[str]
    extra_in_lexical: frozenset[str]

    @property
    def consistent(self) -> bool:
        return not (self.missing_from_chroma or self.extra_in_chroma or self.missing_from_lexical or self.extra_in_lexical)

    def metadata(self, examples: int = 5) -> dict[str, Any]:
        def sample(ids: frozenset[str]) -> str:
            return ", ".join(sorted(ids)[:examples])

        return {
            "stored_chunks": self.stored,
            "missing_from_chroma": len(self.missing_from_chroma),
            "extra_in_chroma": len(self.extra_in_chroma),
            "missing_from_lexical": len(self.missing_from_lexical),
            "extra_in_lexical": len(self.extra_in_lexical),
            "examples": "; ".join(
                f"{name}: {sample(ids)}"
                for name, ids in (
                    ("missing_from_chroma", self.missing_from_chroma),
                    ("extra_in_chroma", self.extra_in_chroma),
                    ("missing_from_lexical", self.missing_from_lexical),
                    ("extra_in_lexical", self.extra_in_lexical),
                )
                if ids
            )
            or "none",
        }


def check_index_consistency(
    store: StateStore, vectors: VectorIndex, lexical: LexicalIndex, source: str | None = None
) -> IndexConsistency:
    """Compare chunk IDs: state store (the truth) against Chroma and the lexical index."""
    stored = store.chunk_ids(source)
    in_chroma = vectors.ids(source)
    in_lexical = lexical.ids(source)
    return IndexConsistency(
        stored=len(stored),
        missing_from_chroma=frozenset(stored - in_chroma),
        extra_in_chroma=frozenset(in_chroma - stored),
        missing_from_lexical=frozenset(stored - in_lexical),
        extra_in_lexical=frozenset(in_lexical - stored),
    )
