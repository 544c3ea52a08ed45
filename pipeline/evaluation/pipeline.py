"""Retrieval-quality evaluation of the pipeline itself on a labelled query set.

Every labelled question goes through the same stages as a question of the queries
file, and the ranking each stage hands on is measured at page level
(``pipeline.evaluation.metrics``: nDCG@10, MRR@10, Recall@50):

- ``bm25``: the lexical index alone, the baseline;
- ``dense``: Chroma alone;
- ``hybrid``: both fused by reciprocal rank, the ``retrieved_candidates`` order;
- ``reranked``: the hybrid candidates reordered by the rerank endpoint, through the
  same client and durable cache as ``reranked_candidates`` (a re-run bills nothing);
- ``context_sets``: the passages a context set keeps, in order, after the per-page cap
  and the token budget.

A question whose rerank failed keeps its hybrid order in ``reranked`` and is counted in
``not_reranked``, as its context set would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.context_sets import diversify_pages, pack_passages
from pipeline.embedding import Embedder
from pipeline.evaluation.labels import LabelledSet, pages_in_order
from pipeline.evaluation.metrics import METRICS, Evaluation, evaluate_rankings
from pipeline.ranking import RankingPlan, ranked_passage
from pipeline.rerank.client import RerankCache, RerankClient, RerankRequest, RerankStats
from pipeline.retrieve import dense_candidates, lexical_candidates, page_sizes_for, retrieve_candidates
from pipeline.store.lexical import LexicalIndex
from pipeline.store.records import Query, StoredChunk
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex
from pipeline.tables import Markdown, markdown_table

RANKINGS = {
    "bm25": "BM25 alone (lexical index)",
    "dense": "dense alone (Chroma)",
    "hybrid": "hybrid retrieval (reciprocal-rank fusion)",
    "reranked": "hybrid candidates after rerank",
    "context_sets": "final context-set order (per-page cap, token budget)",
}
# The two comparisons issue 8 sets targets for: (name, better ranking, baseline ranking).
GAINS = (
    ("final_minus_dense", "context_sets", "dense"),
    ("rerank_minus_hybrid", "reranked", "hybrid"),
)
GAIN_METRIC = "ndcg@10"
ChunkRankings = dict[str, list[str]]


@dataclass
class PipelineEvaluation:
    labels: LabelledSet
    plan: RankingPlan
    model: str
    embedding_model: str  # whose vectors the dense and hybrid retrievals searched
    page_rankings: dict[str, dict[str, list[str]]]  # ranking name → query ID → labelled page paths
    results: dict[str, Evaluation]
    rerank_stats: RerankStats
    not_reranked: dict[str, str] = field(default_factory=dict)  # query ID → error

    def gains(self) -> dict[str, float]:
        return {
            name: self.results[better].mean[GAIN_METRIC] - self.results[baseline].mean[GAIN_METRIC]
            for name, better, baseline in GAINS
        }

    def markdown(self) -> Markdown:
        metrics = markdown_table(
            ["ranking", *METRICS],
            [
                [f"{name}: {RANKINGS[name]}", *(f"{self.results[name].mean[m]:.3f}" for m in METRICS)]
                for name in RANKINGS
            ],
            right_aligned=METRICS,
        )
        gain = f"{GAIN_METRIC} gain"
        gains = markdown_table(
            [gain, "value"],
            [[f"{name} ({better} − {baseline})", f"{self.gains()[name]:+.3f}"] for name, better, baseline in GAINS],
            right_aligned=["value"],
        )
        return Markdown(f"{metrics}\n\n{gains}")

    def to_json(self) -> dict[str, Any]:
        """Means, gains, per-query metrics and the page rankings (top 50) the metrics were computed from."""
        return {
            "corpus": self.labels.corpus,
            "queries": len(self.labels.queries),
            "model": self.model,
            "embedding_model": self.embedding_model,
            "plan": {
                "top_k": self.plan.top_k,
                "rrf_k": self.plan.fusion.rrf_k,
                "lexical_weight": self.plan.fusion.lexical_weight,
                "depth": self.plan.fusion.depth,
                "token_budget": self.plan.token_budget,
                "max_passages_per_page": self.plan.max_passages_per_page,
            },
            "metrics": {name: result.mean for name, result in self.results.items()},
            "gains": self.gains(),
            "per_query": {name: result.per_query for name, result in self.results.items()},
            "page_rankings": {
                name: {query_id: pages[:50] for query_id, pages in rankings.items()}
                for name, rankings in self.page_rankings.items()
            },
            "not_reranked": self.not_reranked,
        }


def evaluate_pipeline(
    labels: LabelledSet,
    store: StateStore,
    vectors: VectorIndex,
    lexical: LexicalIndex,
    embedder: Embedder,
    client: RerankClient,
    plan: RankingPlan = RankingPlan(),
    *,
    cache: RerankCache | None = None,
    max_workers: int = 8,
) -> PipelineEvaluation:
    """Rank every labelled question at each stage and score the rankings against the labels.

    Raises :class:`pipeline.rerank.client.RerankConfigurationError` when the endpoint
    refuses the key or model: every question would fail the same way.
    """
    queries = [Query(query.query_id, query.query) for query in labels.queries]

    def chunk_ids(found: Mapping[str, Sequence[Any]]) -> ChunkRankings:
        return {query_id: [candidate.chunk_id for candidate in ranked] for query_id, ranked in found.items()}

    retrieved: dict[str, ChunkRankings] = {
        "bm25": chunk_ids(lexical_candidates(queries, lexical, plan.top_k)),
        "dense": chunk_ids(dense_candidates(queries, vectors, embedder, plan.top_k)),
        "hybrid": chunk_ids(
            retrieve_candidates(
                queries,
                vectors,
                embedder,
                plan.top_k,
                lexical=lexical,
                fusion=plan.fusion,
                page_sizes=page_sizes_for(plan.fusion, store),
            )
        ),
    }
    wanted = {chunk_id for by_query in retrieved.values() for ranking in by_query.values() for chunk_id in ranking}
    chunks = store.chunks.by_id(wanted)
    # A chunk deleted since it was retrieved cannot be sent or shown.
    rankings = {
        name: {query_id: [c for c in ranking if c in chunks] for query_id, ranking in by_query.items()}
        for name, by_query in retrieved.items()
    }
    reranked, scores, stats, not_reranked = _rerank(queries, rankings["hybrid"], chunks, client, cache, max_workers)
    rankings["reranked"] = reranked
    rankings["context_sets"] = {
        query_id: context_order(
            [chunks[c] for c in ranking], scores.get(query_id), plan.token_budget, plan.max_passages_per_page
        )
        for query_id, ranking in reranked.items()
    }
    page_rankings = {
        name: {
            query_id: pages_in_order((chunks[c].url for c in ranking), labels.base_url)
            for query_id, ranking in by_query.items()
        }
        for name, by_query in rankings.items()
    }
    return PipelineEvaluation(
        labels=labels,
        plan=plan,
        model=client.model,
        embedding_model=vectors.model,
        page_rankings=page_rankings,
        results={name: evaluate_rankings(labels.qrels, page_rankings[name]) for name in RANKINGS},
        rerank_stats=stats,
        not_reranked=not_reranked,
    )


def _rerank(
    queries: Sequence[Query],
    candidates: ChunkRankings,
    chunks: Mapping[str, StoredChunk],
    client: RerankClient,
    cache: RerankCache | None,
    max_workers: int,
) -> tuple[ChunkRankings, dict[str, list[float]], RerankStats, dict[str, str]]:
    """(reordered candidates, their rerank scores, call stats, failed query IDs → error)."""
    requests = [
        RerankRequest(query.query_id, query.query, [chunks[c].embedding_text for c in candidates[query.query_id]])
        for query in queries
        if candidates[query.query_id]
    ]
    outcomes = client.rerank_many(requests, max_workers=max_workers, cache=cache)
    reranked = {query_id: list(ranking) for query_id, ranking in candidates.items()}
    scores: dict[str, list[float]] = {}
    not_reranked: dict[str, str] = {}
    for outcome in outcomes:
        ranking = candidates[outcome.query_id]
        if outcome.response is None:
            not_reranked[outcome.query_id] = outcome.error or "not reranked"
            continue
        reranked[outcome.query_id] = [ranking[result.index] for result in outcome.response.results]
        scores[outcome.query_id] = [result.relevance_score for result in outcome.response.results]
    return reranked, scores, RerankStats.from_outcomes(outcomes), not_reranked


def context_order(
    ranked: Sequence[StoredChunk], scores: Sequence[float] | None, token_budget: int, max_passages_per_page: int | None
) -> list[str]:
    """Chunk IDs of the context set these ranked chunks (best first) would make, in its order."""
    passages = [
        ranked_passage(chunk, rank, 0.0, scores[rank - 1] if scores else None)
        for rank, chunk in enumerate(ranked, start=1)
    ]
    packed = pack_passages(diversify_pages(passages, max_passages_per_page), token_budget)
    return [passage.chunk_id for passage in packed]
