"""The ranking stage's tables: the stored queries, their retrieval candidates, rerank results, the rerank cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.records import Candidate, Query, Ranking
from pipeline.store.schema import candidates, queries, rerank_cache, reranked
from pipeline.store.sql import upsert, utcnow


class RankingStore:
    """Queries, candidates and rankings, each replaced whole by the run that computes them."""

    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._transaction = transaction

    def replace_queries(self, items: Sequence[Query]) -> None:
        with self._transaction() as connection:
            connection.execute(sa.delete(queries))
            if items:
                connection.execute(
                    sa.insert(queries),
                    [{"query_id": q.query_id, "query": q.query, "position": i} for i, q in enumerate(items)],
                )

    def queries(self) -> list[Query]:
        """The stored queries in the queries file's order."""
        query = sa.select(queries.c.query_id, queries.c.query).order_by(queries.c.position)
        with self._engine.connect() as connection:
            return [Query(query_id, text) for query_id, text in connection.execute(query)]

    def replace_candidates(
        self, ranked: Mapping[str, Sequence[tuple[str, float]]], *, embedding_model: str | None
    ) -> None:
        """Store each query's retrieval ranking: [(chunk_id, score), ...] best first, found with the vectors
        of ``embedding_model`` (None: by BM25 alone)."""
        rows = [
            {
                "query_id": query_id,
                "retrieval_rank": rank,
                "chunk_id": chunk_id,
                "retrieval_score": score,
                "embedding_model": embedding_model,
            }
            for query_id, ranking in ranked.items()
            for rank, (chunk_id, score) in enumerate(ranking, start=1)
        ]
        with self._transaction() as connection:
            connection.execute(sa.delete(candidates))
            if rows:
                connection.execute(sa.insert(candidates), rows)

    def candidates(self) -> dict[str, list[Candidate]]:
        """query_id → its candidates in retrieval rank order."""
        result: dict[str, list[Candidate]] = {}
        query = sa.select(candidates).order_by(candidates.c.query_id, candidates.c.retrieval_rank)
        with self._engine.connect() as connection:
            for row in connection.execute(query):
                result.setdefault(row.query_id, []).append(
                    Candidate(row.retrieval_rank, row.chunk_id, row.retrieval_score)
                )
        return result

    def embedding_models(self) -> dict[str, str | None]:
        """query_id → the embedding model of the retrieval that found its candidates (None: BM25 alone)."""
        query = sa.select(candidates.c.query_id, candidates.c.embedding_model).distinct()
        with self._engine.connect() as connection:
            return dict(connection.execute(query).tuples().all())

    def replace_rankings(self, rankings: Sequence[Ranking]) -> None:
        now = utcnow()
        rows = [
            {
                "query_id": ranking.query_id,
                "model": ranking.model,
                "candidates_hash": ranking.candidates_hash,
                "reranked": ranking.reranked,
                "api_version": ranking.api_version,
                "search_units": ranking.search_units,
                "cached": ranking.cached,
                "error": ranking.error,
                "ranking": [[chunk_id, score] for chunk_id, score in ranking.scores],
                "updated_at": now,
            }
            for ranking in rankings
        ]
        with self._transaction() as connection:
            connection.execute(sa.delete(reranked))
            if rows:
                connection.execute(sa.insert(reranked), rows)

    def rankings(self) -> dict[str, Ranking]:
        """query_id → the latest rerank run's outcome for it."""
        with self._engine.connect() as connection:
            return {
                row.query_id: Ranking(
                    query_id=row.query_id,
                    model=row.model,
                    candidates_hash=row.candidates_hash,
                    reranked=row.reranked,
                    api_version=row.api_version,
                    search_units=row.search_units,
                    cached=row.cached,
                    error=row.error,
                    scores=tuple((chunk_id, score) for chunk_id, score in row.ranking),
                )
                for row in connection.execute(sa.select(reranked))
            }

    def billed_search_units(self) -> int:
        """Search units billed by the latest rerank run (cache hits bill nothing)."""
        with self._engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.coalesce(sa.func.sum(reranked.c.search_units), 0))).scalar_one()
            )

    def cached_response(self, cache_key: str) -> dict | None:
        with self._engine.connect() as connection:
            return connection.scalar(sa.select(rerank_cache.c.response).where(rerank_cache.c.cache_key == cache_key))

    def cache_response(self, cache_key: str, response: dict) -> None:
        with self._transaction() as connection:
            upsert(connection, rerank_cache, [{"cache_key": cache_key, "response": response, "created_at": utcnow()}])
