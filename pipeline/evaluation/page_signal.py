"""A page-level signal for the chunk representation study: a vector per page, fused into chunk scores.

A short section (a parameter description, a note) embeds without the page around it and can
match a question better than the page that answers it. Adding the similarity of the question
to the chunk's whole page lets a page that is about the question outrank a stray matching
paragraph of another page:

    score(chunk) = cos(query, chunk) + weight · page score(query, the chunk's page)

Three page scores are compared (``benchmarks/chunk_study.py``):

- cosine to the mean of the page's chunk vectors, L2-normalised: costs no embedding;
- cosine to the embedding of the page's lead (:func:`lead_text`): one text per page;
- the page's support (:class:`PageSupport`, :mod:`pipeline.page_support`'s as retrieval applies
  it): the mean of its best few chunk scores among the query's dense candidates, so a page with
  several matching chunks beats one with a single stray match; it needs no vector at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline import tokens
from pipeline.chunking import MAX_HEADER_TOKENS, ChunkingConfig
from pipeline.extract import Document
from pipeline.page_support import BEST, POOL, members_page_support


@dataclass(frozen=True)
class PageVectors:
    """One unit vector per page (rows of ``vectors``, pages in ``urls`` order) and each chunk's page row."""

    urls: tuple[str, ...]
    vectors: np.ndarray  # (pages, dimensions)
    chunk_pages: np.ndarray  # (chunks,) row of each chunk's page in ``vectors``

    def scores(self, query_vectors: np.ndarray, chunk_scores: np.ndarray) -> np.ndarray:
        """Queries × chunks: each query's cosine to the chunk's page vector."""
        return (query_vectors @ self.vectors.T)[:, self.chunk_pages]


@dataclass(frozen=True)
class PageSupport:
    """A page's score for a query: the mean of its ``best`` highest chunk scores among the query's ``pool``
    best chunks.

    A page has ``min(best, its chunk count)`` slots, so a one-chunk page is judged by that chunk alone;
    a slot whose chunk is not in the pool counts the pool's lowest score. Chunks outside the pool get
    that lowest score too: they rank below the pool whatever their page.
    """

    chunk_pages: np.ndarray  # (chunks,) each chunk's page row
    best: int = BEST
    pool: int = POOL

    def scores(self, query_vectors: np.ndarray, chunk_scores: np.ndarray) -> np.ndarray:
        pages = int(self.chunk_pages.max()) + 1 if len(self.chunk_pages) else 0
        slots = np.minimum(np.bincount(self.chunk_pages, minlength=pages), self.best)
        support = np.empty_like(chunk_scores)
        for row, scores in enumerate(chunk_scores):
            members = np.argsort(-scores, kind="stable")[: self.pool]
            support[row] = scores[members].min()
            support[row, members] = members_page_support(scores[members], self.chunk_pages[members], slots, self.best)
        return support


def page_rows(chunk_urls: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The distinct pages in first-seen order, and each chunk's row among them."""
    rows: dict[str, int] = {}
    chunk_pages = np.array([rows.setdefault(url, len(rows)) for url in chunk_urls], dtype=np.intp)
    return tuple(rows), chunk_pages


def mean_page_vectors(chunk_urls: Sequence[str], chunk_vectors: np.ndarray) -> PageVectors:
    """Each page's vector: the L2-normalised mean of its chunks' vectors."""
    if len(chunk_urls) != len(chunk_vectors):
        raise ValueError(f"{len(chunk_urls)} chunk URLs but {len(chunk_vectors)} vectors")
    urls, chunk_pages = page_rows(chunk_urls)
    sums = np.zeros((len(urls), chunk_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, chunk_pages, chunk_vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    # Chunks of one page pointing in exactly opposite directions would sum to zero: that page gets no signal.
    means = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    return PageVectors(urls, means.astype(np.float32), chunk_pages)


def page_vectors_by_url(
    chunk_urls: Sequence[str], vectors_by_url: Mapping[str, np.ndarray], dimensions: int
) -> PageVectors:
    """Page vectors computed elsewhere (one per URL, e.g. lead embeddings) for these chunks' pages.

    A page without a vector (no lead text) gets a zero vector, so it gets no page signal.
    """
    urls, chunk_pages = page_rows(chunk_urls)
    zero = np.zeros(dimensions, dtype=np.float32)
    stacked = np.stack([vectors_by_url.get(url, zero) for url in urls]) if urls else np.zeros((0, dimensions))
    return PageVectors(urls, stacked.astype(np.float32), chunk_pages)


def page_fused_scores(
    chunk_scores: np.ndarray, query_vectors: np.ndarray, pages: PageVectors | PageSupport, weight: float
) -> np.ndarray:
    """``chunk_scores`` (queries × chunks, cosine) plus ``weight`` times each query's score of the chunk's page."""
    if weight < 0:
        raise ValueError(f"weight must be non-negative, got {weight}")
    return chunk_scores + weight * pages.scores(query_vectors, chunk_scores)


def first_text(document: Document) -> str:
    """The page's first non-blank section text, stripped; "" when it has none."""
    return next((section.text.strip() for section in document.sections if section.text.strip()), "")


def lead_text(document: Document, fits: Callable[[str], bool]) -> str | None:
    """The page title, a newline, then its first section's text, cut (in cl100k tokens) until the whole ``fits``.

    The title is cut to the chunker's header limit and the lead to one chunk's passage; None when the page has no
    text. A lead that cannot fit even at one token leaves the title alone.
    """
    title = tokens.truncate_to_tokens(document.title, MAX_HEADER_TOKENS)
    lead = first_text(document)
    if not lead:
        return None
    budget = ChunkingConfig().max_tokens - MAX_HEADER_TOKENS
    while budget > 0:
        body = tokens.truncate_to_tokens(lead, budget).strip()
        text = f"{title}\n{body}" if title else body
        if fits(text):
            return text
        budget = budget * 3 // 4
    return title or None
