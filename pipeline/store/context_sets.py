"""The published context sets: one row per run and query, the newest ``keep_runs`` runs kept.

A context set crosses this boundary as a ``ContextSet`` record; its row is the record's published
dict (``ContextSet.published``), the same one the JSONL file holds, so what the file and the table
hold cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.records import ContextSet, ContextSetRun
from pipeline.store.schema import CONTEXT_SET_FIELDS, context_sets, latest_context_sets_view
from pipeline.store.sql import kept_runs, replace_run, utcnow


class ContextSetStore:
    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._engine = engine
        self._transaction = transaction

    def save(self, run_id: str, sets: Sequence[ContextSet], *, keep_runs: int) -> int:
        """Store one run's context sets (replacing any of the same run) and keep only the newest
        ``keep_runs`` runs; returns how many older runs were deleted."""
        now = utcnow()
        rows = [
            {
                "run_id": run_id,
                "position": position,
                "created_at": now,
                **context_set.published(),
                "content_hash": context_set.content_hash(),
            }
            for position, context_set in enumerate(sets)
        ]
        with self._transaction() as connection:
            return replace_run(connection, context_sets, run_id, rows, keep_runs=keep_runs)

    def latest(self) -> dict[str, ContextSet]:
        """The newest run's context set of each query (the ``pipeline_latest_context_sets`` view), in file order."""
        view = latest_context_sets_view
        query = sa.select(*[view.c[name] for name in CONTEXT_SET_FIELDS]).order_by(view.c.position)
        with self._engine.connect() as connection:
            return {row.query_id: _context_set(row) for row in connection.execute(query)}

    def runs(self) -> list[ContextSetRun]:
        """The runs whose context sets are kept, newest first."""
        return [ContextSetRun(*run) for run in kept_runs(self._engine, context_sets, context_sets.c.reranked)]


def _context_set(row: sa.Row) -> ContextSet:
    fields = dict(row._mapping)
    return ContextSet(**{**fields, "reranked": bool(fields["reranked"]), "passages": tuple(fields["passages"])})
