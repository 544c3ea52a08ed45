"""Stored rankings stay tied to the candidates they ranked: on SQLite and PostgreSQL, with the
local rerank service over loopback, and the pure ordering logic on its own."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipeline.embedding import MODEL_NAME
from pipeline.ranking import (
    CANDIDATES_CHANGED,
    NO_RERANK_RESULT,
    assemble_context_sets,
    candidates_hash,
    context_order,
    rerank_stored_candidates,
)
from pipeline.rerank import RerankClient
from pipeline.rerank.errors import RerankUnauthorized
from pipeline.store.records import Candidate, Query, Ranking, StoredChunk
from pipeline.store.state import StateStore, sqlite_url
from tests.rerank.conftest import API_KEY, MODEL

QUERY = "How do I rotate the rerank key?"
TOPICS = {
    "keys": "Rotate the rerank key: create a new key, set RERANK_KEY, then revoke the old one.",
    "logs": "Log lines never include the rerank key; redaction covers every form of it.",
    "cache": "Rerank results are cached by endpoint, model, query and documents.",
    "pacing": "Requests are spaced evenly below the model's rate limit.",
    "budget": "Context sets are packed into a token budget of cl100k tokens.",
    "pages": "At most two passages of one page come before other pages.",
}


def _chunk(name: str) -> StoredChunk:
    text = TOPICS[name]
    return StoredChunk(name, "docs", f"http://docs.test/{name}.html", name, (name,), text, f"{name}\n{text}", 20, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    state = StateStore(url)
    for name in TOPICS:
        state.chunks.replace(
            source="docs", url=f"http://docs.test/{name}.html", new_chunks=[_chunk(name)], chunked_key="k"
        )
    state.rankings.replace_queries([Query("q1", QUERY)])
    yield state
    state.dispose()


def _client(service, api_key: str = API_KEY) -> RerankClient:
    return RerankClient(service.url, api_key, MODEL, timeout=5.0, requests_per_minute=60_000)


def _candidates(store: StateStore, names: list[str], embedding_model: str | None = MODEL_NAME) -> None:
    ranked = {"q1": [(name, 1.0 - index / 10) for index, name in enumerate(names)]}
    store.rankings.replace_candidates(ranked, embedding_model=embedding_model)


def _rerank(store: StateStore, client: RerankClient) -> None:
    try:
        rerank_stored_candidates(store, client, top_n=None, max_workers=2)
    finally:
        client.close()


# --- pure logic ---------------------------------------------------------------------------------


def test_the_candidates_hash_ignores_retrieval_order_but_not_the_chunks_or_the_query():
    assert candidates_hash("q", ["a", "b", "c"]) == candidates_hash("q", ["c", "a", "b"])
    assert candidates_hash("q", ["a", "b", "c"]) != candidates_hash("q", ["a", "b"])
    assert candidates_hash("q", ["a", "b", "c"]) != candidates_hash("q", ["a", "b", "d"])
    assert candidates_hash("q", ["a", "b"]) != candidates_hash("another q", ["a", "b"])


def _ranking(
    query: str,
    chunk_ids: list[str],
    scores: list[tuple[str, float]],
    *,
    reranked: bool = True,
    error: str | None = None,
) -> Ranking:
    return Ranking(
        query_id="q1",
        model=MODEL,
        candidates_hash=candidates_hash(query, chunk_ids),
        reranked=reranked,
        api_version="2",
        search_units=0,
        cached=False,
        error=error,
        scores=tuple(scores),
    )


def _candidates_of(*rows: tuple[int, str, float]) -> list[Candidate]:
    return [Candidate(*row) for row in rows]


def test_a_ranking_of_these_candidates_orders_them_by_chunk_id():
    candidates = _candidates_of((1, "a", 0.9), (2, "b", 0.8), (3, "c", 0.7))
    ranking = _ranking("q", ["c", "b", "a"], [("c", 0.95), ("a", 0.5), ("b", 0.1)])
    order = context_order("q", candidates, ranking)
    assert (order.reranked, order.reason_not_reranked) == (True, None)
    assert order.passages == [(3, "c", 0.7, 0.95), (1, "a", 0.9, 0.5), (2, "b", 0.8, 0.1)]


@pytest.mark.parametrize(
    ("query", "candidates"),
    [
        ("q", [(1, "a", 0.9), (2, "b", 0.8)]),  # fewer candidates
        ("q", [(1, "a", 0.9), (2, "b", 0.8), (3, "d", 0.7)]),  # as many, one of them another chunk
        ("q edited", [(1, "a", 0.9), (2, "b", 0.8), (3, "c", 0.7)]),  # the same chunks for another question
    ],
    ids=["fewer", "other-chunk", "other-query"],
)
def test_a_ranking_of_other_candidates_is_not_used(query, candidates):
    ranking = _ranking("q", ["a", "b", "c"], [("c", 0.95), ("a", 0.5), ("b", 0.1)])
    order = context_order(query, _candidates_of(*candidates), ranking)
    assert (order.reranked, order.reason_not_reranked) == (False, CANDIDATES_CHANGED)
    assert order.passages == [(rank, chunk_id, score, None) for rank, chunk_id, score in candidates]


def test_without_a_ranking_or_after_a_failed_one_the_retrieval_order_stays():
    candidates = _candidates_of((1, "a", 0.9), (2, "b", 0.8))
    assert context_order("q", candidates, None).reason_not_reranked == NO_RERANK_RESULT
    failed = context_order("q", candidates, _ranking("q", ["a", "b"], [], reranked=False, error="RerankServerError"))
    assert (failed.reranked, failed.reason_not_reranked) == (False, "RerankServerError")
    assert [chunk_id for _, chunk_id, _, _ in failed.passages] == ["a", "b"]


# --- stored and published ------------------------------------------------------------------------


def test_rankings_are_stored_by_chunk_id_with_the_hash_of_their_candidates(store, start_service):
    names = ["cache", "keys", "logs", "pacing"]
    _candidates(store, names)
    _rerank(store, _client(start_service()))

    row = store.rankings.rankings()["q1"]
    assert row.reranked and row.candidates_hash == candidates_hash(QUERY, names)
    assert sorted(chunk_id for chunk_id, _ in row.scores) == sorted(names)
    [context_set] = assemble_context_sets(store, token_budget=1000, max_passages_per_page=None)
    assert context_set.reranked is True and context_set.reason_not_reranked is None
    assert context_set.embedding_model == MODEL_NAME
    passages = context_set.passages
    assert [p["chunk_id"] for p in passages] == [chunk_id for chunk_id, _ in row.scores]
    # Each passage keeps its own retrieval rank, whatever its place after rerank.
    assert {p["chunk_id"]: p["retrieval_rank"] for p in passages} == {name: i for i, name in enumerate(names, 1)}


@pytest.mark.parametrize(
    "new_candidates",
    [["keys", "logs"], ["budget", "pages", "keys", "cache"]],
    ids=["fewer-candidates", "other-candidates"],
)
def test_a_rerank_refused_after_retrieval_changed_publishes_the_retrieval_order(store, start_service, new_candidates):
    _candidates(store, ["cache", "keys", "logs", "pacing"])
    service = start_service()
    _rerank(store, _client(service))
    # Retrieval runs again and finds other candidates; then the key is rotated and rerank gets a 401.
    _candidates(store, new_candidates)
    with pytest.raises(RerankUnauthorized):
        _rerank(store, _client(service, api_key="inf-rotated-away-1"))

    [context_set] = assemble_context_sets(store, token_budget=1000, max_passages_per_page=None)
    assert context_set.reranked is False
    assert context_set.reason_not_reranked == CANDIDATES_CHANGED
    assert context_set.api_version is None
    assert [(p["chunk_id"], p["retrieval_rank"], p["rerank_score"]) for p in context_set.passages] == [
        (name, rank, None) for rank, name in enumerate(new_candidates, 1)
    ]


def test_the_same_candidates_found_in_another_order_keep_their_ranking(store, start_service):
    names = ["cache", "keys", "logs", "pacing"]
    _candidates(store, names)
    _rerank(store, _client(start_service()))
    # Retrieval runs again (say BM25 alone) and finds the same chunks in another order.
    _candidates(store, list(reversed(names)), embedding_model=None)

    [context_set] = assemble_context_sets(store, token_budget=1000, max_passages_per_page=None)
    assert context_set.reranked is True and context_set.embedding_model is None
    assert all(p["rerank_score"] is not None for p in context_set.passages)
    assert {p["chunk_id"]: p["retrieval_rank"] for p in context_set.passages} == {
        name: rank for rank, name in enumerate(reversed(names), 1)
    }


def test_rankings_stored_before_they_carried_a_candidates_hash_are_never_published(store):
    """A database written by the previous release: rankings keyed by retrieval rank, no hash."""
    url = store.engine.url.render_as_string(hide_password=False)
    _candidates(store, ["keys", "logs"])
    with store.transaction() as connection:
        connection.execute(sa.text("DROP TABLE pipeline_alembic_version"))  # as written before migrations
        connection.execute(sa.text("DROP TABLE pipeline_reranked"))
        connection.execute(
            sa.text(
                "CREATE TABLE pipeline_reranked (query_id TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "reranked BOOLEAN NOT NULL, api_version TEXT, search_units INTEGER NOT NULL, "
                "cached BOOLEAN NOT NULL, error TEXT, ranking JSON NOT NULL, updated_at TIMESTAMP NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO pipeline_reranked VALUES "
                "('q1', 'cohere-rerank-3-5', TRUE, '2', 1, FALSE, NULL, '[[2, 0.9], [1, 0.1]]', CURRENT_TIMESTAMP)"
            )
        )
    reopened = StateStore(url)
    try:
        assert reopened.rankings.rankings() == {}
        [context_set] = assemble_context_sets(reopened, token_budget=1000)
        assert (context_set.reranked, context_set.reason_not_reranked) == (False, NO_RERANK_RESULT)
        assert [p["chunk_id"] for p in context_set.passages] == ["keys", "logs"]
        # The table has its new shape: a ranking stores and loads with its hash.
        reopened.rankings.replace_rankings([_ranking(QUERY, ["keys"], [("keys", 0.5)])])
        assert reopened.rankings.rankings()["q1"].candidates_hash == candidates_hash(QUERY, ["keys"])
    finally:
        reopened.dispose()
