"""From stored candidates to stored rankings, and from rankings to context sets.

``rerank_stored_candidates`` sends each query's candidates to the rerank endpoint
(through the durable cache, so unchanged queries cost nothing) and stores one
ranking per query: reranked, or the retrieval order with the reason reranking
failed (``failed_rankings`` lists those; failures are never cached, so the next
run sends only them). ``assemble_context_sets`` turns the stored rankings into
context sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.context import RankedPassage, build_context_set, diversify_pages, pack_passages
from pipeline.rerank.client import RerankClient, RerankOutcome, RerankRequest, RerankStats
from pipeline.store.state import StateStore, StoredChunk


class StoreRerankCache:
    """The rerank cache kept in the state store (durable across dyno restarts)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def get(self, key: str) -> dict | None:
        return self._store.cache_get(key)

    def put(self, key: str, value: dict) -> None:
        self._store.cache_put(key, value)


@dataclass
class RerankRunReport:
    stats: RerankStats
    outcomes: list[RerankOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RerankOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def api_versions(self) -> list[str]:
        return sorted({o.response.api_version for o in self.outcomes if o.response is not None and o.response.api_version})


def rerank_stored_candidates(
    store: StateStore,
    client: RerankClient,
    *,
    top_n: int | None,
    max_workers: int,
) -> RerankRunReport:
    query_texts = dict(store.load_queries())
    stored_candidates = store.load_candidates()
    chunk_rows = store.chunks_by_id(
        chunk_id for ranking in stored_candidates.values() for _, chunk_id, _ in ranking
    )
    requests = []
    for query_id, ranking in stored_candidates.items():
        if query_id not in query_texts:
            continue
        documents = [chunk_rows[chunk_id][0].embedding_text for _, chunk_id, _ in ranking if chunk_id in chunk_rows]
        if documents:
            requests.append(RerankRequest(query_id=query_id, query=query_texts[query_id], documents=documents, top_n=top_n))
    outcomes = client.rerank_many(requests, max_workers=max_workers, cache=StoreRerankCache(store))
    store.replace_reranked([_ranking_row(client.model, stored_candidates[o.query_id], chunk_rows, o) for o in outcomes])
    return RerankRunReport(stats=RerankStats.from_outcomes(outcomes), outcomes=outcomes)


def failed_rankings(store: StateStore) -> dict[str, str]:
    """Query ID → why it was not reranked, for every stored ranking that kept the retrieval order."""
    return {
        query_id: ranking["error"] or "not reranked"
        for query_id, ranking in sorted(store.load_reranked().items())
        if not ranking["reranked"]
    }


def _ranking_row(model: str, ranking, chunk_rows, outcome: RerankOutcome) -> dict[str, Any]:
    # Rerank indexes point into the documents sent, which skipped candidates whose chunk vanished.
    sent_ranks = [rank for rank, chunk_id, _ in ranking if chunk_id in chunk_rows]
    if outcome.response is not None:
        order = [[sent_ranks[result.index], result.relevance_score] for result in outcome.response.results]
        return {
            "query_id": outcome.query_id,
            "model": model,
            "reranked": True,
            "api_version": outcome.response.api_version,
            "search_units": outcome.response.search_units,
            "cached": outcome.cached,
            "error": None,
            "ranking": order,
        }
    return {
        "query_id": outcome.query_id,
        "model": model,
        "reranked": False,
        "api_version": None,
        "search_units": 0,
        "cached": False,
        "error": outcome.error,
        "ranking": [[rank, None] for rank in sent_ranks],
    }


def ranked_passage(
    chunk: StoredChunk, retrieval_rank: int, retrieval_score: float, rerank_score: float | None
) -> RankedPassage:
    return RankedPassage(
        chunk_id=chunk.chunk_id,
        url=chunk.url,
        title=chunk.title,
        heading_path=chunk.heading_path,
        text=chunk.text,
        retrieval_rank=retrieval_rank,
        retrieval_score=retrieval_score,
        rerank_score=rerank_score,
    )


def assemble_context_sets(
    store: StateStore, token_budget: int, max_passages_per_page: int | None = None
) -> list[dict[str, Any]]:
    """One context set per stored query, in the queries file's order (see ``diversify_pages`` for the cap)."""
    stored_candidates = store.load_candidates()
    rankings = store.load_reranked()
    chunk_rows = store.chunks_by_id(chunk_id for ranking in stored_candidates.values() for _, chunk_id, _ in ranking)
    context_sets = []
    for query_id, query in store.load_queries():
        by_rank = {rank: (chunk_id, score) for rank, chunk_id, score in stored_candidates.get(query_id, [])}
        ranking = rankings.get(query_id)
        order: Sequence[tuple[int, float | None]] = (
            [(rank, score) for rank, score in ranking["ranking"]] if ranking else [(rank, None) for rank in sorted(by_rank)]
        )
        passages = []
        for retrieval_rank, rerank_score in order:
            chunk_id, retrieval_score = by_rank[retrieval_rank]
            if chunk_id not in chunk_rows:
                continue
            passages.append(ranked_passage(chunk_rows[chunk_id][0], retrieval_rank, retrieval_score, rerank_score))
        reranked = bool(ranking and ranking["reranked"])
        context_sets.append(
            build_context_set(
                query_id=query_id,
                query=query,
                model=ranking["model"] if ranking else "",
                reranked=reranked,
                api_version=ranking["api_version"] if ranking else None,
                reason_not_reranked=None if reranked else (ranking["error"] if ranking else "no rerank result for this query"),
                token_budget=token_budget,
                passages=pack_passages(diversify_pages(passages, max_passages_per_page), token_budget),
            )
        )
    return context_sets
