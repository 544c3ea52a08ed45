"""From stored candidates to stored rankings, and from rankings to context sets.

``rerank_stored_candidates`` sends each query's candidates to the rerank endpoint
(through the durable cache, so unchanged queries cost nothing) and stores one
ranking per query: reranked, or the reason reranking failed, its context set then
keeping the retrieval order (``failed_rankings`` lists those; failures are never
cached, so the next run sends only them). ``assemble_context_sets`` turns the stored rankings into
context sets. Both read and write the store around a core that works in memory (``rerank_candidates``,
``query_context_set``), which ``pipeline ask`` runs on a question of its own without storing anything.

A ranking is stored by chunk ID together with the hash of the candidates it ranked
(``candidates_hash``). Retrieval may run again while reranking then fails (a rotated
key answers 401 and the rerank asset keeps the previous rankings); a context set
follows a stored ranking only while its query's current candidates hash the same,
and otherwise keeps the retrieval order and says the candidates changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.context_sets import RankedPassage, build_context_set, diversify_pages, pack_passages
from pipeline.rerank.client import RerankCache, RerankClient, RerankOutcome, RerankRequest, RerankStats
from pipeline.retrieve import Fusion
from pipeline.store.records import Candidate, ContextSet, Query, Ranking, StoredChunk
from pipeline.store.state import StateStore


@dataclass(frozen=True)
class RankingPlan:
    """The retrieval and packing knobs of a question's context set; the defaults are those of the
    retrieved_candidates and ranked_context_sets assets (a test holds them equal)."""

    top_k: int = 50
    fusion: Fusion = Fusion()
    token_budget: int = 3000
    max_passages_per_page: int | None = 2


class StoreRerankCache:
    """The rerank cache kept in the state store (durable across dyno restarts)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def get(self, key: str) -> dict | None:
        return self._store.rankings.cached_response(key)

    def put(self, key: str, value: dict) -> None:
        self._store.rankings.cache_response(key, value)


@dataclass
class RerankRunReport:
    stats: RerankStats
    outcomes: list[RerankOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RerankOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def api_versions(self) -> list[str]:
        return sorted(
            {o.response.api_version for o in self.outcomes if o.response is not None and o.response.api_version}
        )


def rerank_stored_candidates(
    store: StateStore,
    client: RerankClient,
    *,
    top_n: int | None,
    max_workers: int,
) -> RerankRunReport:
    query_texts = {query.query_id: query.query for query in store.rankings.queries()}
    stored_candidates = {
        query_id: ranking for query_id, ranking in store.rankings.candidates().items() if query_id in query_texts
    }
    chunk_rows = store.chunks.by_id(
        candidate.chunk_id for ranking in stored_candidates.values() for candidate in ranking
    )
    rankings, report = rerank_candidates(
        query_texts,
        stored_candidates,
        chunk_rows,
        client,
        top_n=top_n,
        max_workers=max_workers,
        cache=StoreRerankCache(store),
    )
    store.rankings.replace_rankings(rankings)
    return report


def rerank_candidates(
    query_texts: Mapping[str, str],
    candidates: Mapping[str, Sequence[Candidate]],
    chunk_rows: Mapping[str, StoredChunk],
    client: RerankClient,
    *,
    top_n: int | None,
    max_workers: int,
    cache: RerankCache | None,
) -> tuple[list[Ranking], RerankRunReport]:
    """Each query's candidates (query ID → candidates in retrieval order) reranked: one ranking per query
    that has candidates, and the run's report. Stores nothing; the rerank cache is used when given."""
    # A candidate whose chunk vanished since retrieval cannot be sent; it is skipped when published too.
    sent = {
        query_id: [candidate.chunk_id for candidate in ranking if candidate.chunk_id in chunk_rows]
        for query_id, ranking in candidates.items()
    }
    requests = [
        RerankRequest(
            query_id=query_id,
            query=query_texts[query_id],
            documents=[chunk_rows[chunk_id].embedding_text for chunk_id in chunk_ids],
            top_n=top_n,
        )
        for query_id, chunk_ids in sent.items()
        if chunk_ids
    ]
    outcomes = client.rerank_many(requests, max_workers=max_workers, cache=cache)
    hashes = {
        query_id: candidates_hash(query_texts[query_id], (candidate.chunk_id for candidate in ranking))
        for query_id, ranking in candidates.items()
    }
    rankings = [_ranking(client.model, hashes[o.query_id], sent[o.query_id], o) for o in outcomes]
    return rankings, RerankRunReport(stats=RerankStats.from_outcomes(outcomes), outcomes=outcomes)


def failed_rankings(store: StateStore) -> dict[str, str]:
    """Query ID → why it was not reranked, for every stored ranking that kept the retrieval order."""
    return {
        query_id: ranking.error or "not reranked"
        for query_id, ranking in sorted(store.rankings.rankings().items())
        if not ranking.reranked
    }


CANDIDATES_CHANGED = "candidates changed since rerank"
NO_RERANK_RESULT = "no rerank result for this query"


def candidates_hash(query: str, chunk_ids: Iterable[str]) -> str:
    """sha256 over the query text and the sorted candidate chunk IDs: what a ranking was computed for.

    Sorted, like the rerank cache key: rerank scores depend on which chunks are sent for
    which query, not on their retrieval order, so a retrieval that returns the same
    candidates in another order keeps its ranking. A chunk ID hashes the chunk's content,
    so an edited passage is a different candidate.
    """
    payload = json.dumps([query, sorted(chunk_ids)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _ranking(model: str, hashed_candidates: str, sent: Sequence[str], outcome: RerankOutcome) -> Ranking:
    response = outcome.response
    return Ranking(
        query_id=outcome.query_id,
        model=model,
        candidates_hash=hashed_candidates,
        reranked=response is not None,
        api_version=response.api_version if response else None,
        search_units=response.search_units if response else 0,
        cached=outcome.cached,
        error=outcome.error,
        # Rerank indexes point into the documents sent.
        scores=tuple((sent[result.index], result.relevance_score) for result in response.results) if response else (),
    )


@dataclass(frozen=True)
class ContextOrder:
    """A query's candidates in the order its context set takes them, and whether that order is the reranker's."""

    passages: list[tuple[int, str, float, float | None]]  # (retrieval_rank, chunk_id, retrieval_score, rerank_score)
    reranked: bool
    reason_not_reranked: str | None


def context_order(query: str, candidates: Sequence[Candidate], ranking: Ranking | None) -> ContextOrder:
    """The stored ranking's order when it was computed for exactly these candidates, else the retrieval order and why.

    ``candidates`` are the query's stored candidates in rank order; ``ranking`` is its stored rerank outcome, if any.
    """
    retrieval_order: list[tuple[int, str, float, float | None]] = [
        (c.retrieval_rank, c.chunk_id, c.retrieval_score, None) for c in candidates
    ]
    if ranking is None:
        return ContextOrder(retrieval_order, False, NO_RERANK_RESULT)
    if ranking.candidates_hash != candidates_hash(query, (candidate.chunk_id for candidate in candidates)):
        return ContextOrder(retrieval_order, False, CANDIDATES_CHANGED)
    if not ranking.reranked:
        return ContextOrder(retrieval_order, False, ranking.error or "not reranked")
    # Equal hashes: the ranking holds these very chunks (or, with top_n, the best of them).
    retrieved = {c.chunk_id: (c.retrieval_rank, c.chunk_id, c.retrieval_score) for c in candidates}
    reranked: list[tuple[int, str, float, float | None]] = [
        (*retrieved[chunk_id], rerank_score) for chunk_id, rerank_score in ranking.scores
    ]
    return ContextOrder(reranked, True, None)


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
) -> list[ContextSet]:
    """One context set per stored query, in the queries file's order (see ``diversify_pages`` for the cap)."""
    stored_candidates = store.rankings.candidates()
    rankings = store.rankings.rankings()
    embedding_models = store.rankings.embedding_models()
    chunk_rows = store.chunks.by_id(
        candidate.chunk_id for ranking in stored_candidates.values() for candidate in ranking
    )
    return [
        query_context_set(
            query,
            stored_candidates.get(query.query_id, []),
            rankings.get(query.query_id),
            chunk_rows,
            embedding_model=embedding_models.get(query.query_id),
            token_budget=token_budget,
            max_passages_per_page=max_passages_per_page,
        )
        for query in store.rankings.queries()
    ]


def query_context_set(
    query: Query,
    candidates: Sequence[Candidate],
    ranking: Ranking | None,
    chunk_rows: Mapping[str, StoredChunk],
    *,
    embedding_model: str | None,
    token_budget: int,
    max_passages_per_page: int | None,
) -> ContextSet:
    """A query's context set: its candidates (retrieval order) in its ranking's order when the ranking is for
    them (``context_order``), capped per page and packed into the token budget."""
    order = context_order(query.query, candidates, ranking)
    passages = [
        ranked_passage(chunk_rows[chunk_id], retrieval_rank, retrieval_score, rerank_score)
        for retrieval_rank, chunk_id, retrieval_score, rerank_score in order.passages
        if chunk_id in chunk_rows
    ]
    return build_context_set(
        query_id=query.query_id,
        query=query.query,
        model=ranking.model if ranking else "",
        embedding_model=embedding_model,
        reranked=order.reranked,
        api_version=ranking.api_version if ranking and order.reranked else None,
        reason_not_reranked=order.reason_not_reranked,
        token_budget=token_budget,
        passages=pack_passages(diversify_pages(passages, max_passages_per_page), token_budget),
    )
