"""Alternative chunk representations for the chunk representation study (``benchmarks/chunk_study.py``).

The shipped chunker (``pipeline.chunking``) joins heading sections under 40 tokens to their
neighbours, cuts each (merged) section on its own and embeds ``Title > heading path`` above the
passage. The study compares what retrieval gets from other shapes of the same extracted documents:

- ``sections``: every heading section on its own, the chunker before issue 18;
- ``merged-40``: the shipped chunker; ``merged-80`` and ``merged-120`` join sections under 80
  and 120 tokens instead;
- ``prefix-title`` / ``prefix-path`` / ``prefix-none``: ``sections``' chunks, embedding only
  the page title, only the heading path, or the bare passage above the text;
- ``naive-window``: the page title, then a fixed window of the page's text (headings
  ignored), ``window_tokens`` cl100k tokens every ``stride_tokens`` (200 every 170);
  ``window-128``: 128 every 100; ``page-window``: ``naive-window`` over the whole page's text,
  navigation included;
- ``summary-30``: the shipped chunks, cut 30 tokens shorter, with the page's first 30 tokens of
  text between the header and the passage.

A window's passage (what a context set shows) is the window without the title, under the
page title and no heading path; the other variants show the shipped chunk's passage.

Every embedded text passes the same ``fits`` check as the shipped chunks (MiniLM's 256 word
pieces, the embeddings endpoint's 2,048 characters).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import tokens
from pipeline.chunking import MAX_HEADER_TOKENS, ChunkingConfig, chunk_document, context_header
from pipeline.evaluation.page_signal import first_text
from pipeline.extract import Document
from pipeline.store.records import StoredChunk

Fits = Callable[[str], bool]


@dataclass(frozen=True)
class VariantChunk:
    url: str
    embedding_text: str  # what is embedded and indexed
    title: str
    heading_path: tuple[str, ...]
    text: str  # the passage a context set shows and packs

    def stored(self, chunk_id: str, position: int) -> StoredChunk:
        """This chunk as the state store would hold it, for the pipeline's context-set functions."""
        return StoredChunk(
            chunk_id=chunk_id,
            source="study",
            url=self.url,
            title=self.title,
            heading_path=self.heading_path,
            text=self.text,
            embedding_text=self.embedding_text,
            token_count=tokens.count_tokens(self.embedding_text),
            position=position,
        )


def merged_chunks(document: Document, fits: Fits, min_tokens: int) -> list[VariantChunk]:
    """The shipped chunker with another ``merge_below_tokens`` (0: every heading section on its own)."""
    config = ChunkingConfig(merge_below_tokens=min_tokens)
    return [
        VariantChunk(c.url, c.embedding_text, c.title, c.heading_path, c.text)
        for c in chunk_document(document, config, fits=fits)
    ]


def prefixed_chunks(document: Document, fits: Fits, prefix: str) -> list[VariantChunk]:
    """``sections``' chunks with another line above the passage: ``title``, ``path`` or ``none``.

    A prefix the passage cannot carry within ``fits`` is dropped for that chunk (never seen with
    these prefixes: each is at most as long as the shipped header, cut to the same token limit).
    """
    chunks = []
    for chunk in chunk_document(document, ChunkingConfig(merge_below_tokens=0), fits=fits):
        header = _prefix(prefix, chunk.title, chunk.heading_path)
        text = f"{header}\n{chunk.text}" if header else chunk.text
        embedded = text if fits(text) else chunk.text
        chunks.append(VariantChunk(chunk.url, embedded, chunk.title, chunk.heading_path, chunk.text))
    return chunks


def _prefix(prefix: str, title: str, heading_path: tuple[str, ...]) -> str:
    if prefix == "title":
        return context_header(title, ())
    if prefix == "path":
        return context_header("", heading_path[1:] if heading_path and heading_path[0] == title else heading_path)
    if prefix == "none":
        return ""
    raise ValueError(f"unknown prefix {prefix!r}: title, path or none")


def window_chunks(
    document: Document, fits: Fits, window_tokens: int = 200, stride_tokens: int = 170
) -> list[VariantChunk]:
    """The page title, a newline, then ``window_tokens`` of the page text every ``stride_tokens``.

    Windows are cut on cl100k token boundaries that start a UTF-8 character, so each is an exact
    slice of the text. A window that fails ``fits`` is shortened from its end until it passes; the
    next window then starts no later than where the shortened one ended, so no text is skipped.
    """
    if not 0 < stride_tokens <= window_tokens:
        raise ValueError(f"stride_tokens must be between 1 and window_tokens, got {stride_tokens}")
    title = tokens.truncate_to_tokens(document.title, MAX_HEADER_TOKENS)
    text = document.text.strip()
    if not text:
        return []
    data = text.encode("utf-8")
    offsets = [0]
    for token in tokens.encoding().decode_tokens_bytes(tokens.encode(text)):
        offsets.append(offsets[-1] + len(token))
    boundaries = [index for index, offset in enumerate(offsets) if _is_char_start(data, offset)]
    last = len(offsets) - 1
    chunks = []
    start = 0
    while start < last:
        end = _snap(boundaries, min(start + window_tokens, last))
        while True:
            body = data[offsets[start] : offsets[end]].decode("utf-8").strip()
            embedded = f"{title}\n{body}" if title else body
            if fits(embedded) or end - start <= 1:
                break
            end = _snap(boundaries, start + (end - start) * 3 // 4, minimum=start + 1)
        if body:
            chunks.append(VariantChunk(document.url, embedded, document.title, (), body))
        if end >= last:
            break
        start = _snap(boundaries, min(start + stride_tokens, end), minimum=start + 1)
    return chunks


def _snap(boundaries: Sequence[int], index: int, minimum: int = 0) -> int:
    """The largest character-start token index at most ``index`` (but at least ``minimum``)."""
    position = bisect_right(boundaries, index) - 1
    while position + 1 < len(boundaries) and boundaries[position] < minimum:
        position += 1
    return boundaries[max(position, 0)]


def _is_char_start(data: bytes, offset: int) -> bool:
    return offset == len(data) or data[offset] & 0xC0 != 0x80


def summary_chunks(document: Document, fits: Fits, summary_tokens: int = 30) -> list[VariantChunk]:
    """The shipped chunks with the page's lead (its first text, cut to ``summary_tokens``) between header and passage.

    Chunks are cut ``summary_tokens`` shorter so the lead fits beside them; a chunk that already starts
    with the lead, or that cannot carry it within ``fits``, embeds without it.
    """
    summary = " ".join(tokens.truncate_to_tokens(first_text(document), summary_tokens).split())
    config = ChunkingConfig(max_tokens=ChunkingConfig().max_tokens - summary_tokens)
    chunks = []
    for chunk in chunk_document(document, config, fits=fits):
        header, _, passage = chunk.embedding_text.partition("\n")
        with_summary = f"{header}\n{summary}\n{passage}"
        starts_with_it = " ".join(passage.split()).startswith(summary)
        embedded = with_summary if summary and not starts_with_it and fits(with_summary) else chunk.embedding_text
        chunks.append(VariantChunk(chunk.url, embedded, chunk.title, chunk.heading_path, chunk.text))
    return chunks


VARIANTS: dict[str, Callable[[Document, Fits], list[VariantChunk]]] = {
    "sections": lambda document, fits: merged_chunks(document, fits, min_tokens=0),
    "merged-40": lambda document, fits: merged_chunks(document, fits, min_tokens=40),
    "merged-80": lambda document, fits: merged_chunks(document, fits, min_tokens=80),
    "merged-120": lambda document, fits: merged_chunks(document, fits, min_tokens=120),
    "naive-window": window_chunks,
    "window-128": lambda document, fits: window_chunks(document, fits, window_tokens=128, stride_tokens=100),
    "prefix-title": lambda document, fits: prefixed_chunks(document, fits, "title"),
    "prefix-path": lambda document, fits: prefixed_chunks(document, fits, "path"),
    "prefix-none": lambda document, fits: prefixed_chunks(document, fits, "none"),
    "page-window": window_chunks,
    "summary-30": summary_chunks,
}
# Variants given the whole page's text (navigation included) as the document's one section.
WHOLE_PAGE_VARIANTS = frozenset({"page-window"})
