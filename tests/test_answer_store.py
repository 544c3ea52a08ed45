"""The answers table, its view and the answer cache, on SQLite and real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from pipeline.store.migrate import alembic_config, upgrade_schema
from pipeline.store.records import Answer, ContextSet
from pipeline.store.schema import context_sets


def _context_set(query_id: str, text: str = "Rotate a key with heroku config:set.") -> ContextSet:
    passage = {
        "rank": 1,
        "chunk_id": f"{query_id}-chunk",
        "url": f"https://docs.test/{query_id}",
        "title": "Keys",
        "heading_path": ["Keys", "Rotation"],
        "text": text,
        "tokens": 9,
        "retrieval_rank": 3,
        "retrieval_score": 0.123457,
        "rerank_score": 0.987654,
    }
    return ContextSet(
        query_id=query_id,
        query=f"How do I rotate {query_id}?",
        model="cohere-rerank-3-5",
        reranked=True,
        api_version="2",
        reason_not_reranked=None,
        token_budget=3000,
        tokens=9,
        passages=(passage,),
        embedding_model="all-MiniLM-L6-v2",
    )


def _answer(context_set: ContextSet, *, cached: bool = False, error: str | None = None) -> Answer:
    passage = context_set.passages[0]
    return Answer(
        query_id=context_set.query_id,
        query=context_set.query,
        answered=error is None,
        answer=None if error else "Use heroku config:set [1].",
        citations=() if error else ({"number": 1, "chunk_id": passage["chunk_id"], "url": passage["url"]},),
        model="extractive-answerer@local",
        prompt_version="cited-answer-1",
        prompt_tokens=120,
        completion_tokens=12,
        cached=cached,
        context_set_hash=context_set.content_hash(),
        error=error,
    )


def test_answers_round_trip_in_order_and_older_runs_are_pruned(store):
    sets = [_context_set("q2"), _context_set("q1")]
    store.context_sets.save("run-1", sets, keep_runs=5)
    answers = [_answer(sets[0]), _answer(sets[1], error="http_500")]

    assert store.answers.save("run-1", answers, keep_runs=2) == 0
    assert list(store.answers.latest().values()) == answers  # the published order: the context sets'
    assert store.answers.latest()["q1"].failed and store.answers.latest()["q1"].answer is None

    store.answers.save("run-2", answers, keep_runs=2)
    assert store.answers.save("run-3", answers[:1], keep_runs=2) == 1
    assert [(run.run_id, run.queries, run.answered) for run in store.answers.runs()] == [
        ("run-3", 1, 1),
        ("run-2", 2, 1),
    ]
    assert list(store.answers.latest()) == ["q2"]


def test_the_hash_of_a_context_set_read_back_is_the_one_stored_with_it(store):
    """The answers view joins on it: a float or key order changed by the database would hide every answer."""
    store.context_sets.save("run-1", [_context_set("q1")], keep_runs=5)
    [read_back] = store.context_sets.latest().values()
    with store.engine.connect() as connection:
        stored = connection.scalar(sa.select(context_sets.c.content_hash))
    assert read_back.content_hash() == stored == _context_set("q1").content_hash()


def test_an_answer_is_published_only_beside_the_context_set_it_was_computed_from(store):
    store.context_sets.save("context-1", [_context_set("q1"), _context_set("q2")], keep_runs=5)
    store.answers.save("answers-1", [_answer(_context_set("q1")), _answer(_context_set("q2"))], keep_runs=5)

    # A later run publishes q1's context set unchanged and q2's with other text; the answers did not run again.
    store.context_sets.save(
        "context-2", [_context_set("q1"), _context_set("q2", "Keys now rotate by themselves.")], keep_runs=5
    )

    assert list(store.answers.latest()) == ["q1"]
    assert list(store.answers.newest_run()) == ["q1", "q2"]  # stored as computed, for the check to report


def test_completions_are_cached_by_key_and_replaced_whole(store):
    assert store.answers.cached_completion("k") is None
    store.answers.cache_completion("k", {"text": "first", "prompt_tokens": 1})
    store.answers.cache_completion("k", {"text": "again", "prompt_tokens": 2})
    assert store.answers.cached_completion("k") == {"text": "again", "prompt_tokens": 2}


def test_context_sets_stored_before_answers_existed_get_their_content_hash(store):
    store.context_sets.save("run-1", [_context_set("q1")], keep_runs=5)
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0004")
    upgrade_schema(store.engine)

    store.answers.save("answers-1", [_answer(_context_set("q1"))], keep_runs=5)
    assert list(store.answers.latest()) == ["q1"]
