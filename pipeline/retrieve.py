"""RetrievalHit retrieval: dense (Chroma), lexical (BM25) or both fused with reciprocal-rank fusion.

Dense retrieval finds paraphrases ("too many clients" → max_connections); BM25 finds
exact identifiers, error texts and rare terms that a 384-dimensional sentence
embedding blurs. Reciprocal-rank fusion (Cormack et al., 2009) combines the two
rankings by rank alone, so it needs no score calibration between cosine similarity
and BM25: ``score(chunk) = Σ weight_r / (rrf_k + rank_r(chunk))`` over the rankings
that contain the chunk. Each retriever contributes its ``depth`` best chunks (2·k by
default); the union is deduplicated by chunk ID and cut to ``k``.

Defaults (``benchmarks/quality.py`` measures the alternatives): the standard
``rrf_k=60``, and the BM25 ranking at half the dense ranking's weight, since BM25
alone is much weaker on questions phrased the way users ask them. With a
``page_support_weight`` above 0 the dense ranking is first reordered by page support
(:mod:`pipeline.page_support`, off by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.embedding import Embedder
from pipeline.ingest.vectors import sync_vectors
from pipeline.page_support import POOL, page_supported
from pipeline.store.lexical import LexicalIndex, sync_lexical
from pipeline.store.records import Query
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass(frozen=True)
class Fusion:
    """How dense and lexical rankings are fused; ``depth=None`` means each retriever returns ``2·k``."""

    rrf_k: int = 60
    lexical_weight: float = 0.5  # the dense ranking weighs 1
    depth: int | None = None
    page_support_weight: float = 0.0  # 0: the dense ranking by cosine alone

    def __post_init__(self) -> None:
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be non-negative, got {self.rrf_k}")
        if self.lexical_weight < 0:
            raise ValueError(f"lexical_weight must be non-negative, got {self.lexical_weight}")
        if self.page_support_weight < 0:
            raise ValueError(f"page_support_weight must be non-negative, got {self.page_support_weight}")
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")


@dataclass(frozen=True)
class RetrievalHit:
    chunk_id: str
    # Fused RRF score (hybrid), cosine similarity (dense) or BM25 (lexical); higher is better.
    score: float
    dense_rank: int | None = None  # 1-based rank in the dense list, None if absent
    lexical_rank: int | None = None


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], rrf_k: int
) -> list[tuple[str, float]]:
    """Fuse ID rankings (best first) into one, best first; ties keep first-seen order."""
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, chunk_id in enumerate(dict.fromkeys(ranking), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    order = {chunk_id: position for position, chunk_id in enumerate(fused)}
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))


def fuse(dense: Sequence[str], lexical: Sequence[str], k: int, fusion: Fusion = Fusion()) -> list[RetrievalHit]:
    """The ``k`` best of the union of a dense and a lexical ranking of chunk IDs."""
    dense_ranks = {chunk_id: rank for rank, chunk_id in enumerate(dense, start=1)}
    lexical_ranks = {chunk_id: rank for rank, chunk_id in enumerate(lexical, start=1)}
    fused = reciprocal_rank_fusion([dense, lexical], [1.0, fusion.lexical_weight], fusion.rrf_k)
    return [
        RetrievalHit(chunk_id, score, dense_ranks.get(chunk_id), lexical_ranks.get(chunk_id))
        for chunk_id, score in fused[:k]
    ]


def dense_candidates(
    queries: Sequence[Query],
    vectors: VectorIndex,
    embedder: Embedder,
    k: int,
    *,
    page_support_weight: float = 0.0,
    page_sizes: Mapping[str, int] | None = None,
) -> dict[str, list[RetrievalHit]]:
    """query_id → the ``k`` nearest chunks by cosine similarity, best first (questions embedded as queries).

    With a ``page_support_weight``, the ``POOL`` nearest are ordered by cosine + weight × page support instead
    (``page_sizes``: stored chunks per page URL, :func:`page_sizes_for`), and the score is that sum.
    """
    query_vectors = embedder.embed_queries([query.query for query in queries])
    if not page_support_weight:
        found = {
            query.query_id: [(hit.chunk_id, hit.score) for hit in vectors.query(vector, k)]
            for query, vector in zip(queries, query_vectors, strict=True)
        }
    elif page_sizes is None:
        raise ValueError("page support needs the stored chunks per page (page_sizes)")
    else:
        found = {
            query.query_id: page_supported(
                [
                    (hit.chunk_id, hit.score, hit.url or "")
                    for hit in vectors.query(vector, max(k, POOL), with_urls=True)
                ],
                page_sizes,
                page_support_weight,
            )[:k]
            for query, vector in zip(queries, query_vectors, strict=True)
        }
    return {
        query_id: [RetrievalHit(chunk_id, score, dense_rank=rank) for rank, (chunk_id, score) in enumerate(ranked, 1)]
        for query_id, ranked in found.items()
    }


def page_sizes_for(fusion: Fusion, store: StateStore) -> dict[str, int] | None:
    """Stored chunks per page URL when ``fusion`` applies page support (it reads them); None otherwise."""
    return store.chunks.page_sizes() if fusion.page_support_weight else None


def lexical_candidates(queries: Sequence[Query], lexical: LexicalIndex, k: int) -> dict[str, list[RetrievalHit]]:
    """query_id → the ``k`` best chunks by BM25, best first."""
    return {
        query.query_id: [
            RetrievalHit(hit.chunk_id, hit.score, lexical_rank=rank)
            for rank, hit in enumerate(lexical.search(query.query, k), start=1)
        ]
        for query in queries
    }


def retrieve_candidates(
    queries: Sequence[Query],
    vectors: VectorIndex,
    embedder: Embedder,
    k: int,
    *,
    lexical: LexicalIndex | None = None,
    fusion: Fusion = Fusion(),
    page_sizes: Mapping[str, int] | None = None,
) -> dict[str, list[RetrievalHit]]:
    """query_id → candidates, best first: hybrid when a lexical index is given, dense only otherwise. Page support
    (``fusion.page_support_weight``) needs ``page_sizes`` (:func:`page_sizes_for`)."""

    def dense(depth: int) -> dict[str, list[RetrievalHit]]:
        return dense_candidates(
            queries, vectors, embedder, depth, page_support_weight=fusion.page_support_weight, page_sizes=page_sizes
        )

    if lexical is None:
        return dense(k)
    depth = fusion.depth or 2 * k
    dense_hits = dense(depth)
    lexical_hits = lexical_candidates(queries, lexical, depth)
    return {
        query.query_id: fuse(
            [c.chunk_id for c in dense_hits[query.query_id]],
            [c.chunk_id for c in lexical_hits[query.query_id]],
            k,
            fusion,
        )
        for query in queries
    }


def candidate_rankings(candidates: Mapping[str, Sequence[RetrievalHit]]) -> dict[str, list[tuple[str, float]]]:
    """The stored form: query_id → [(chunk_id, score), ...] best first."""
    return {query_id: [(c.chunk_id, c.score) for c in ranked] for query_id, ranked in candidates.items()}


@dataclass(frozen=True)
class SearchIndexes:
    vectors: VectorIndex
    lexical: LexicalIndex
    vectors_restored: int
    lexical_rebuilt: bool


def synced_search_indexes(
    store: StateStore, vectors: VectorIndex, lexical: LexicalIndex, log: Callable[[str], None]
) -> SearchIndexes:
    """The embedding model's Chroma collection and the lexical index, first made to hold exactly the stored
    chunks: a fresh dyno starts with both empty. ``log`` is told what had to be restored."""
    deleted, restored, _ = sync_vectors(store, vectors)
    if deleted or restored:
        log(f"vector index synced with the state store: {restored} restored, {deleted} deleted")
    lexical_sync = sync_lexical(store, lexical)
    if lexical_sync.rebuilt:
        log(f"lexical index rebuilt from the state store: {lexical_sync.metadata()}")
    return SearchIndexes(vectors, lexical, restored, lexical_sync.rebuilt)
