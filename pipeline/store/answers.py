"""The published answers: one row per run and query, the newest ``keep_runs`` runs kept, and the answer cache.

An answer crosses this boundary as an ``Answer`` record; its row is the record's published dict
(``Answer.published``), the same one the JSONL file holds. The ``pipeline_latest_answers`` view
holds the newest run's answers whose context set is still the newest one of its query with the
same content hash, so a context set published after the answers were computed hides its stale
answer instead of standing beside it (:meth:`AnswerStore.latest`); :meth:`AnswerStore.newest_run`
reads the run's rows as they were written, for the check that reports what the view hides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.records import Answer, AnswerRun
from pipeline.store.schema import ANSWER_FIELDS, answer_cache, answers, latest_answers_view
from pipeline.store.sql import kept_runs, replace_run, upsert, utcnow


class AnswerStore:
    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._transaction = transaction

    def save(self, run_id: str, items: Sequence[Answer], *, keep_runs: int) -> int:
        """Store one run's answers (replacing any of the same run) and keep only the newest ``keep_runs``
        runs; returns how many older runs were deleted."""
        now = utcnow()
        rows = [
            {"run_id": run_id, "position": position, "created_at": now, **answer.published()}
            for position, answer in enumerate(items)
        ]
        with self._transaction() as connection:
            return replace_run(connection, answers, run_id, rows, keep_runs=keep_runs)

    def latest(self) -> dict[str, Answer]:
        """The published answers (the ``pipeline_latest_answers`` view), in context-set order."""
        return self._read(latest_answers_view, None)

    def newest_run(self) -> dict[str, Answer]:
        """Every answer the newest run stored, those the view hides as stale included."""
        newest = (
            sa.select(answers.c.run_id).order_by(answers.c.created_at.desc(), answers.c.run_id.desc()).limit(1)
        ).scalar_subquery()
        return self._read(answers, answers.c.run_id == newest)

    def runs(self) -> list[AnswerRun]:
        """The runs whose answers are kept, newest first."""
        return [AnswerRun(*run) for run in kept_runs(self._engine, answers, answers.c.answered)]

    def cached_completion(self, cache_key: str) -> dict | None:
        with self._engine.connect() as connection:
            return connection.scalar(sa.select(answer_cache.c.completion).where(answer_cache.c.cache_key == cache_key))

    def cache_completion(self, cache_key: str, completion: dict) -> None:
        with self._transaction() as connection:
            upsert(
                connection, answer_cache, [{"cache_key": cache_key, "completion": completion, "created_at": utcnow()}]
            )

    def _read(self, source: sa.TableClause, where: sa.ColumnElement[bool] | None) -> dict[str, Answer]:
        query = sa.select(*[source.c[name] for name in ANSWER_FIELDS]).order_by(source.c.position)
        if where is not None:
            query = query.where(where)
        with self._engine.connect() as connection:
            return {row.query_id: _answer(row) for row in connection.execute(query)}


def _answer(row: sa.Row) -> Answer:
    fields = dict(row._mapping)
    return Answer(
        **{
            **fields,
            "answered": bool(fields["answered"]),
            "cached": bool(fields["cached"]),
            "citations": tuple(fields["citations"]),
        }
    )
