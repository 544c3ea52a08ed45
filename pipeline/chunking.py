"""Document → token-bounded, overlapping chunks with stable IDs.

Heading sections shorter than ``merge_below_tokens`` are first joined to their
neighbours (``pipeline.sections``): embedded alone, a one-line note or parameter
description loses the text around it (the chunk representation study in
docs/evaluation.md measured the threshold). A merged run carries its first section's
heading path; the later sections' headings stay in its text. Every other section is
chunked on its own, so its chunks never span two headings and their heading path is exact.

Within a section the text is cut at the coarsest boundary that yields pieces
within budget: paragraphs, then lines (list items, table rows, code lines), then
sentences, then words, then — for a single huge "word" such as a minified blob —
token windows. Pieces are packed greedily; consecutive chunks of
one section share a tail of about ``overlap_tokens``.

Token counts are cl100k (``pipeline.tokens``). Every piece is encoded once and the
packer adds cached counts; only each finished chunk's ``embedding_text`` is encoded
again, to enforce ``max_tokens`` exactly (BPE counts are not additive across a
join) together with the caller's optional ``fits`` check (e.g. the embedder's
256-word-piece window, which code and numbers can exceed well below 200 tokens).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from pipeline import tokens
from pipeline.extract import Document
from pipeline.sections import merge_short_sections

# Bump when chunk output changes for the same input and config.
# 2: short heading sections are merged with their neighbours (merge_below_tokens).
CHUNKER_VERSION = "2"

# The context header ("Title > Heading > Subheading") is cut to this many tokens so
# a deep or verbose heading path cannot starve the passage of room.
MAX_HEADER_TOKENS = 40
_HEADER_SEPARATOR = " > "


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    url: str
    title: str
    heading_path: tuple[str, ...]
    text: str  # the passage body, what downstream QA reads
    token_count: int  # cl100k tokens of embedding_text
    position: int  # order within the document

    @property
    def embedding_text(self) -> str:
        """What gets embedded: the context header, a newline, then the passage."""
        return _with_header(context_header(self.title, self.heading_path), self.text)


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunk limits in cl100k tokens.

    ``max_tokens`` bounds the whole ``embedding_text`` (header included);
    ``overlap_tokens`` is the most text repeated from the end of one chunk at the
    start of the next within a section; a section's last chunk that adds fewer
    than ``min_tokens`` new tokens is folded into the previous chunk when the
    result still fits.
    """

    max_tokens: int = 200
    overlap_tokens: int = 30
    min_tokens: int = 20
    # Heading sections with fewer tokens are joined to their neighbours (pipeline.sections); 0: never.
    merge_below_tokens: int = 40

    def __post_init__(self) -> None:
        if self.max_tokens < MAX_HEADER_TOKENS + 20:
            raise ValueError(f"max_tokens must be at least {MAX_HEADER_TOKENS + 20}, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens <= self.max_tokens // 2:
            raise ValueError(
                f"overlap_tokens must be between 0 and max_tokens/2 ({self.max_tokens // 2}), got {self.overlap_tokens}"
            )
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ValueError(f"min_tokens must be between 0 and max_tokens, got {self.min_tokens}")
        if self.merge_below_tokens < 0:
            raise ValueError(f"merge_below_tokens must be at least 0, got {self.merge_below_tokens}")

    def fingerprint(self) -> str:
        """Identifies the settings and chunker version, so a change triggers re-chunking."""
        settings = {
            "version": CHUNKER_VERSION,
            "encoding": tokens.ENCODING_NAME,
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "min_tokens": self.min_tokens,
            "merge_below_tokens": self.merge_below_tokens,
            "max_header_tokens": MAX_HEADER_TOKENS,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def context_header(title: str, heading_path: tuple[str, ...]) -> str:
    """``Title > H2 > H3``; a first heading that repeats the title is not repeated."""
    path = heading_path[1:] if heading_path and heading_path[0] == title else heading_path
    header = _HEADER_SEPARATOR.join(part for part in (title, *path) if part)
    # A token is at least one byte, so short headers skip the encode.
    if len(header.encode("utf-8")) > MAX_HEADER_TOKENS:
        header = tokens.truncate_to_tokens(header, MAX_HEADER_TOKENS)
    return header


def _with_header(header: str, text: str) -> str:
    return f"{header}\n{text}" if header else text


def header_line(embedding_text: str) -> str | None:
    """The context header an ``embedding_text`` starts with (its first line), None when it has none."""
    header, newline, _ = embedding_text.partition("\n")
    return header if newline and header else None


def chunk_document(
    document: Document,
    config: ChunkingConfig = ChunkingConfig(),
    *,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    """Split ``document`` into chunks whose ``embedding_text`` has at most
    ``config.max_tokens`` tokens and, when given, satisfies ``fits``."""
    chunks: list[Chunk] = []
    occurrences: Counter[str] = Counter()
    # A merged run must still fit one passage beside the longest header.
    passage_room = config.max_tokens - MAX_HEADER_TOKENS
    for section in merge_short_sections(document.sections, config.merge_below_tokens, passage_room):
        if not section.text.strip():
            continue
        header = context_header(document.title, section.heading_path)
        packer = _SectionPacker(header, config, fits)
        for text, token_count in packer.pack(section.text):
            chunks.append(
                Chunk(
                    chunk_id=_chunk_id(document.url, document.title, section.heading_path, text, occurrences),
                    url=document.url,
                    title=document.title,
                    heading_path=section.heading_path,
                    text=text,
                    token_count=token_count,
                    position=len(chunks),
                )
            )
    return chunks


def _chunk_id(url: str, title: str, heading_path: tuple[str, ...], text: str, occurrences: Counter[str]) -> str:
    """Hash of everything that shapes the stored chunk (URL and embedding text).

    A passage repeated verbatim under the same heading gets an occurrence number;
    only repeats carry one, so every other ID is independent of its neighbours.
    """
    key = "\n".join([url, title, "\x1f".join(heading_path), text])
    seen = occurrences[key]
    occurrences[key] += 1
    if seen:
        key += f"\n#{seen}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class _Piece:
    text: str
    separator: str  # the exact text that preceded this piece in the section
    tokens: int
    overlap: bool = False  # carried from the previous chunk


# Boundaries from coarsest to finest. Separators are captured so a chunk's text is an
# exact slice of the section (code keeps its blank lines and indentation).
_BOUNDARIES = (
    re.compile(r"(\n[ \t]*\n(?:[ \t]*\n)*)"),
    re.compile(r"(\n)"),
    re.compile(r"((?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+)"),
    re.compile(r"(\s+)"),
)
_SENTENCE_START = re.compile(r"(?:[.!?][\"')\]]?|\n)\s+")
_WHITESPACE = re.compile(r"\s+")


def _separator_cost(separator: str) -> int:
    # Spaces merge into the next token in cl100k; a newline run is usually one token.
    return 1 if "\n" in separator else 0


class _SectionPacker:
    def __init__(self, header: str, config: ChunkingConfig, fits: Callable[[str], bool] | None) -> None:
        self.header = header
        self.config = config
        self.fits = fits
        header_tokens = tokens.count_tokens(header + "\n") if header else 0
        self.budget = config.max_tokens - header_tokens

    def pack(self, text: str) -> list[tuple[str, int]]:
        """The section's chunks as ``(body text, embedding-text token count)``."""
        queue = deque(self._split(text, "", self.budget))
        chunks: list[list[_Piece]] = []
        counts: list[int] = []
        current: list[_Piece] = []
        used = 0  # estimated tokens of current
        while queue:
            piece = queue.popleft()
            cost = piece.tokens + _separator_cost(piece.separator)
            if current and current[-1].overlap and used + cost > self.budget:
                current, used = [], 0  # the overlap must not crowd out new text
            if not current or used + cost <= self.budget:
                used = used + cost if current else piece.tokens
                current.append(piece)
                if queue:
                    continue
            else:
                queue.appendleft(piece)
            accepted, count, rejected = self._verify(current)
            queue.extendleft(reversed(rejected))
            chunks.append(accepted)
            counts.append(count)
            current = self._overlap(accepted) if queue else []
            used = _estimate(current)
        self._merge_small_tail(chunks, counts)
        return [(_join(chunk), count) for chunk, count in zip(chunks, counts, strict=True)]

    def _split(self, text: str, separator: str, budget: int, level: int = 0) -> list[_Piece]:
        """Cut ``text`` at the coarsest boundaries that give pieces of at most ``budget`` tokens."""
        if level == len(_BOUNDARIES):
            return _token_windows(text, separator, budget)
        parts = _BOUNDARIES[level].split(text)
        pieces: list[_Piece] = []
        pending = separator
        for index in range(0, len(parts), 2):
            part = parts[index]
            if index:
                pending += parts[index - 1]
            if not part:
                continue
            count = tokens.count_tokens(part)
            if count <= budget:
                pieces.append(_Piece(part, pending, count))
            else:
                pieces.extend(self._split(part, pending, budget, level + 1))
            pending = ""
        return pieces

    def _verify(self, pieces: list[_Piece]) -> tuple[list[_Piece], int, list[_Piece]]:
        """Exact check of a packed chunk; returns (accepted, its token count, pieces to re-queue).

        Estimates can undercount and ``fits`` is only known for a whole text, so on
        failure the longest passing prefix that still adds new text is kept. When none
        passes, the carried overlap is dropped, and after that the first piece is split
        finer until something fits.
        """
        while True:
            count = self._check(pieces)
            if count is not None:
                return pieces, count, []
            carried = sum(1 for piece in pieces if piece.overlap)  # overlap pieces lead
            best: tuple[int, int] | None = None
            low, high = carried + 1, len(pieces) - 1
            while low <= high:
                middle = (low + high) // 2
                middle_count = self._check(pieces[:middle])
                if middle_count is None:
                    high = middle - 1
                else:
                    best = (middle, middle_count)
                    low = middle + 1
            if best is not None:
                length, count = best
                return pieces[:length], count, pieces[length:]
            if carried:
                pieces = pieces[carried:]
                continue
            first = pieces[0]
            smaller = self._split(first.text, first.separator, max(1, first.tokens // 2))
            if len(smaller) < 2:
                raise ValueError(
                    f"no chunk under the header {self.header!r} passes the fits() check, not even"
                    f" the indivisible text {first.text[:40]!r}"
                )
            pieces = smaller + pieces[1:]

    def _check(self, pieces: list[_Piece]) -> int | None:
        """Token count of the chunk's embedding text if it passes every limit, else None."""
        embedding_text = _with_header(self.header, _join(pieces))
        count = tokens.count_tokens(embedding_text)
        if count > self.config.max_tokens or (self.fits is not None and not self.fits(embedding_text)):
            return None
        return count

    def _overlap(self, previous: list[_Piece]) -> list[_Piece]:
        """The tail of the previous chunk to repeat at the start of the next one:
        whole trailing pieces when they fit in ``overlap_tokens``, else the last
        sentences or words of the final piece. Never the whole previous chunk."""
        limit = self.config.overlap_tokens
        if limit == 0:
            return []
        start = len(previous)
        while start > 1 and _estimate(previous[start - 1 :]) <= limit:
            start -= 1
        if start < len(previous):
            return [_Piece(p.text, p.separator, p.tokens, overlap=True) for p in previous[start:]]
        return _text_tail(previous[-1].text, limit)

    def _merge_small_tail(self, chunks: list[list[_Piece]], counts: list[int]) -> None:
        if len(chunks) < 2:
            return
        new = [piece for piece in chunks[-1] if not piece.overlap]
        if _estimate(new) >= self.config.min_tokens:
            return
        merged = chunks[-2] + new
        count = self._check(merged)
        if count is not None:
            chunks[-2:] = [merged]
            counts[-2:] = [count]


def _join(pieces: list[_Piece]) -> str:
    return "".join(piece.text if index == 0 else piece.separator + piece.text for index, piece in enumerate(pieces))


def _estimate(pieces: list[_Piece]) -> int:
    return sum(piece.tokens + (_separator_cost(piece.separator) if index else 0) for index, piece in enumerate(pieces))


def _text_tail(text: str, limit: int) -> list[_Piece]:
    """About the last ``limit`` tokens of ``text``, starting at a sentence or word start."""
    token_ids = tokens.encode(text)
    tail = tokens.decode(token_ids[-limit:])
    start = len(text) - len(tail)
    if start <= 0 or not text.endswith(tail):  # whole text, or cut inside a character
        return []
    if not text[start - 1].isspace():
        # Prefer a sentence start unless that would discard most of the tail.
        sentence = _SENTENCE_START.search(tail)
        boundary = sentence if sentence and sentence.end() <= len(tail) // 2 else _WHITESPACE.search(tail)
        if boundary is None:
            return []
        tail = tail[boundary.end() :]
    tail = tail.lstrip()
    return [_Piece(tail, "", tokens.count_tokens(tail), overlap=True)] if tail else []


def _token_windows(text: str, separator: str, budget: int) -> list[_Piece]:
    """Last resort for a run without whitespace: consecutive windows of about ``budget`` tokens.

    Cuts fall only on UTF-8 character starts (a token may hold part of a character),
    so every window is an exact slice of ``text``.
    """
    data = text.encode("utf-8")
    offsets = [0]
    for token in tokens.encoding().decode_tokens_bytes(tokens.encode(text)):
        offsets.append(offsets[-1] + len(token))
    pieces: list[_Piece] = []
    start = 0
    last = len(offsets) - 1
    while start < last:
        end = min(start + budget, last)
        while end > start + 1 and not _is_char_start(data, offsets[end]):
            end -= 1
        while not _is_char_start(data, offsets[end]):  # one character spans more than budget tokens
            end += 1
        window = data[offsets[start] : offsets[end]].decode("utf-8")
        pieces.append(_Piece(window, separator if not pieces else "", tokens.count_tokens(window)))
        start = end
    return pieces


def _is_char_start(data: bytes, offset: int) -> bool:
    return offset == len(data) or data[offset] & 0xC0 != 0x80
