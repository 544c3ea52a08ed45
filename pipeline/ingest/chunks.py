"""Documents → chunks: the chunking stage of ingest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.chunking import ChunkingConfig, chunk_document
from pipeline.embedding import MAX_WORD_PIECES, MODEL_NAME
from pipeline.embedding.contract import MAX_INPUT_CHARACTERS
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


# Identifies the limits ``chunk_fits`` applies: a change to either re-chunks every page (chunk IDs
# hash the content, so the chunks that come out the same keep their IDs and their vectors).
FITS_FINGERPRINT = f"{MODEL_NAME}/{MAX_WORD_PIECES}/{MAX_INPUT_CHARACTERS}c"


def chunk_fits(word_piece_counts: Callable[[Sequence[str]], Sequence[int]]) -> Callable[[str], bool]:
    """The check every chunk's ``embedding_text`` passes, whichever model embeds it.

    At most MiniLM's 256 word pieces: about 1% of 200-token chunks of code-heavy docs exceed it
    and would be silently truncated when embedded locally. At most the 2,048 characters one
    input of the embeddings endpoint may have (longer is a 400): whitespace costs neither cl100k
    tokens nor word pieces, so deeply indented code can pass both and still be too long. Both
    limits apply in both modes, so chunks and their IDs do not depend on the embedding mode.
    """

    def fits(text: str) -> bool:
        return len(text) <= MAX_INPUT_CHARACTERS and word_piece_counts([text])[0] <= MAX_WORD_PIECES

    return fits


def chunk_documents(
    store: StateStore,
    source: str,
    config: ChunkingConfig,
    word_piece_counts: Callable[[Sequence[str]], Sequence[int]],
) -> ChunkReport:
    """Rechunk changed documents; every chunk passes :func:`chunk_fits` (``word_piece_counts``: MiniLM's)."""
    report = ChunkReport()
    fits = chunk_fits(word_piece_counts)
    fingerprint = f"{config.fingerprint()}:{FITS_FINGERPRINT}"
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
