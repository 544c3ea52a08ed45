"""Documents → chunks: the chunking stage of ingest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.chunking import ChunkingConfig, chunk_document
from pipeline.embedding import MAX_WORD_PIECES, MODEL_NAME, MiniLMEmbedder
from pipeline.extract import Document, Section
from pipeline.store.records import StoredChunk
from pipeline.store.state import StateStore


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
    report.chunks_removed += store.chunks.delete_orphans(source)
    for stored_document in store.pages.documents_to_chunk(source, fingerprint):
        document = Document(
            url=stored_document.url,
            title=stored_document.title,
            sections=tuple(Section(tuple(s["heading_path"]), s["text"]) for s in stored_document.sections),
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
        changes = store.chunks.replace(
            source=source,
            url=document.url,
            new_chunks=stored,
            chunked_key=f"{stored_document.content_hash}:{fingerprint}",
        )
        report.documents_chunked += 1
        report.chunks_added += changes.added
        report.chunks_removed += changes.removed
        report.max_token_count = max([report.max_token_count, *(chunk.token_count for chunk in stored)])
    report.total_chunks = store.chunks.count(source)
    return report
