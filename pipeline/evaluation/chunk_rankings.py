"""The rankings the chunk representation study measures for one chunk variant (``benchmarks/chunk_study.py``).

A chunk's ID is its position in the variant's chunk list, as a string. Every ranking is built
with the pipeline's own pieces, so a variant's figures are the pipeline's as far as retrieval goes:

- ``dense``: exact cosine search over the variant's vectors;
- ``bm25``: the lexical search it is given (the pipeline's index over the variant's embedded texts);
- ``hybrid``: dense and BM25, each ``2·K`` deep, fused by ``pipeline.retrieve.fuse``;
- ``dense+mean@w`` / ``dense+lead@w`` / ``dense+top3@w``: dense with a page signal of
  ``pipeline.evaluation.page_signal`` (mean of the page's chunk vectors, its lead's embedding, or its
  best three chunk scores) at weight ``w``; ``hybrid+mean@w`` and so on: that dense ranking fused with
  BM25 as ``hybrid`` is;
- ``reranked``: ``hybrid``'s candidates ordered by a scorer (the local rerank stand-in's), as the
  stand-in orders them: by score, ties in candidate order;
- ``final``: the context set ``reranked`` makes (per-page cap, token budget), as the
  ``retrieval_evaluation`` asset measures it (``pipeline.evaluation.pipeline.context_order``);
- ``hybrid/cap3`` (and ``hybrid+top3@w/cap3``, …): the hybrid ranking with at most three chunks of a
  page, so fifty candidates reach more pages;
- ``final (rerank+top3@w)``: the reranked candidates ordered again by their rerank score plus ``w``
  times their page's support among them (:func:`rerank_page_support`), then packed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from pipeline.evaluation.chunk_variants import VariantChunk
from pipeline.evaluation.page_signal import PageSupport, PageVectors, page_fused_scores
from pipeline.evaluation.pipeline import context_order
from pipeline.page_support import page_supported
from pipeline.ranking import RankingPlan
from pipeline.retrieve import Fusion, fuse

K = 50
DEPTH = 2 * K  # what hybrid retrieval takes from each retriever by default
PAGE_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
RETRIEVAL = ("dense", "bm25", "hybrid")

ChunkRankings = dict[str, list[str]]  # query ID → chunk IDs, best first
# (query text, depth) → chunk IDs, best first.
LexicalSearch = Callable[[str, int], list[str]]
# (query, documents) → one score per document, in input order.
Score = Callable[[str, Sequence[str]], list[float]]


def page_ranking(stage: str, page_vector: str, weight: float) -> str:
    return f"{stage}+{page_vector}@{weight:g}"


def page_families(page_vectors: Iterable[str], weights: Sequence[float] = PAGE_WEIGHTS) -> dict[str, list[str]]:
    """``dense+mean`` → its rankings, one per weight (and so on per stage and page vector), in weight order."""
    return {
        f"{stage}+{name}": [page_ranking(stage, name, weight) for weight in weights]
        for name in page_vectors
        for stage in ("dense", "hybrid")
    }


def retrieval_rankings(
    queries: Mapping[str, str],
    query_vectors: np.ndarray,
    chunk_vectors: np.ndarray,
    lexical: LexicalSearch,
    page_vectors: Mapping[str, PageVectors | PageSupport],
    weights: Sequence[float] = PAGE_WEIGHTS,
    chunk_pages: Sequence[int] = (),
    caps: Sequence[int] = (),
) -> dict[str, ChunkRankings]:
    """Ranking name → query ID → the ``K`` best chunk IDs; ``queries`` (query ID → text) in ``query_vectors`` order.

    For each cap, every hybrid ranking also comes with at most that many chunks per page (``chunk_pages``: each
    chunk's page), named ``hybrid/cap3`` and so on: the candidates then reach more pages.
    """
    ids = [str(position) for position in range(len(chunk_vectors))]
    bm25 = {query_id: lexical(text, DEPTH) for query_id, text in queries.items()}
    result: dict[str, ChunkRankings] = {"bm25": {query_id: found[:K] for query_id, found in bm25.items()}}
    chunk_scores = query_vectors @ chunk_vectors.T
    dense_scores = {"": chunk_scores} | {
        f"+{name}@{weight:g}": page_fused_scores(chunk_scores, query_vectors, pages, weight)
        for name, pages in page_vectors.items()
        for weight in weights
    }
    for suffix, scores in dense_scores.items():
        dense_name, hybrid_name = f"dense{suffix}", f"hybrid{suffix}"
        names = [dense_name, hybrid_name, *(capped_name(hybrid_name, cap) for cap in caps)]
        result.update({name: {} for name in names})
        for query_id, row in zip(queries, scores, strict=True):
            dense = [ids[position] for position in np.argsort(-row, kind="stable")[:DEPTH]]
            result[dense_name][query_id] = dense[:K]
            fused = [hit.chunk_id for hit in fuse(dense, bm25[query_id], 2 * DEPTH, Fusion())]
            result[hybrid_name][query_id] = fused[:K]
            for cap in caps:
                result[capped_name(hybrid_name, cap)][query_id] = per_page_capped(fused, chunk_pages, cap)[:K]
    return result


def capped_name(ranking: str, cap: int) -> str:
    return f"{ranking}/cap{cap}"


def per_page_capped(ranking: Sequence[str], chunk_pages: Sequence[int], cap: int) -> list[str]:
    """``ranking`` without each chunk whose page already has ``cap`` chunks ahead of it."""
    taken: dict[int, int] = {}
    kept = []
    for chunk_id in ranking:
        page = chunk_pages[int(chunk_id)]
        if taken.get(page, 0) < cap:
            taken[page] = taken.get(page, 0) + 1
            kept.append(chunk_id)
    return kept


def reranked(
    queries: Mapping[str, str], candidates: ChunkRankings, chunks: Sequence[VariantChunk], score: Score
) -> tuple[ChunkRankings, dict[str, list[float]]]:
    """Each query's candidates ordered by ``score`` of their embedded texts (as sent to the rerank endpoint),
    and the scores in that order."""
    order: ChunkRankings = {}
    scores: dict[str, list[float]] = {}
    for query_id, ranking in candidates.items():
        found = score(queries[query_id], [chunks[int(chunk_id)].embedding_text for chunk_id in ranking])
        best_first = sorted(range(len(ranking)), key=lambda index: (-found[index], index))
        order[query_id] = [ranking[index] for index in best_first]
        scores[query_id] = [found[index] for index in best_first]
    return order, scores


def final_orders(
    ranked: ChunkRankings,
    scores: Mapping[str, Sequence[float]],
    chunks: Sequence[VariantChunk],
    plan: RankingPlan = RankingPlan(),
) -> ChunkRankings:
    """The chunk IDs of each query's context set, in order, made from its ``ranked`` chunks with the plan's
    per-page cap and token budget."""
    return {
        query_id: context_order(
            [chunks[int(chunk_id)].stored(chunk_id, int(chunk_id)) for chunk_id in ranking],
            scores.get(query_id),
            plan.token_budget,
            plan.max_passages_per_page,
        )
        for query_id, ranking in ranked.items()
    }


def rerank_page_support(
    ranked: ChunkRankings, scores: Mapping[str, Sequence[float]], chunk_pages: np.ndarray, best: int, weight: float
) -> tuple[ChunkRankings, dict[str, list[float]]]:
    """Each query's reranked candidates ordered again by rerank score + ``weight`` × the page's support among them
    (the mean of its ``best`` highest rerank scores, as retrieval's page support takes cosines), with those scores."""
    sizes = {str(page): int(count) for page, count in enumerate(np.bincount(chunk_pages))}
    order: ChunkRankings = {}
    fused: dict[str, list[float]] = {}
    for query_id, ranking in ranked.items():
        pool = [
            (chunk_id, score, str(chunk_pages[int(chunk_id)]))
            for chunk_id, score in zip(ranking, scores[query_id], strict=True)
        ]
        supported = page_supported(pool, sizes, weight, best)
        order[query_id] = [chunk_id for chunk_id, _ in supported]
        fused[query_id] = [score for _, score in supported]
    return order, fused
