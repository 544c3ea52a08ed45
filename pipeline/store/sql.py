"""Small SQL helpers every stage store shares: timestamps, upserts on SQLite and PostgreSQL, row counts,
reading a large result a batch at a time, publishing a run's rows while keeping the newest runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

BATCH = 500  # SQLite caps bound parameters per statement


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def upsert(connection: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows, replacing those whose primary key already exists (SQLite and PostgreSQL)."""
    _insert(connection, table, rows, replace=True)


def insert_missing(connection: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows whose primary key is not there yet, leaving existing rows as they are."""
    _insert(connection, table, rows, replace=False)


def _insert(connection: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, replace: bool) -> None:
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    key_names = [column.name for column in table.primary_key.columns]
    updates = {name: statement.excluded[name] for name in rows[0] if name not in key_names} if replace else {}
    statement = (
        statement.on_conflict_do_update(index_elements=key_names, set_=updates)
        if updates
        else statement.on_conflict_do_nothing(index_elements=key_names)
    )
    connection.execute(statement, list(rows))


def count_rows(engine: Engine, table: sa.Table, source: str | None) -> int:
    """Rows in ``table``, or only those of ``source``."""
    query = sa.select(sa.func.count()).select_from(table)
    if source is not None:
        query = query.where(table.c.source == source)
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def in_batches(engine: Engine, query: sa.Select, key: sa.ColumnElement[str], size: int) -> Iterator[list[Any]]:
    """The rows of ``query`` ordered by the unique ``key``, ``size`` at a time, each batch read on its own
    connection (a result read whole would hold every row, and drivers such as psycopg2 buffer it whole
    client-side). The caller may write between batches, even rows that take them out of ``query``."""
    ordered = query.order_by(key).limit(size)
    after: str | None = None
    while True:
        with engine.connect() as connection:
            rows = list(connection.execute(ordered if after is None else ordered.where(key > after)))
        if not rows:
            return
        yield rows
        after = getattr(rows[-1], key.name)


def replace_run(
    connection: Connection, table: sa.Table, run_id: str, rows: Sequence[Mapping[str, Any]], *, keep_runs: int
) -> int:
    """Store one run's rows of a published table keyed by ``run_id`` and ``created_at`` (replacing any of the
    same run) and keep only the newest ``keep_runs`` runs; returns how many older runs were deleted."""
    if keep_runs < 1:
        raise ValueError(f"keep_runs must be at least 1, got {keep_runs}")
    newest_runs = (
        sa.select(table.c.run_id)
        .group_by(table.c.run_id)
        .order_by(sa.func.max(table.c.created_at).desc(), table.c.run_id.desc())
        .limit(keep_runs)
    )
    connection.execute(sa.delete(table).where(table.c.run_id == run_id))
    if rows:
        connection.execute(sa.insert(table), list(rows))
    kept = list(connection.scalars(newest_runs))
    older = sa.select(sa.func.count(sa.distinct(table.c.run_id))).where(table.c.run_id.not_in(kept))
    deleted = int(connection.scalar(older) or 0)
    if deleted:
        connection.execute(sa.delete(table).where(table.c.run_id.not_in(kept)))
    return deleted


def kept_runs(engine: Engine, table: sa.Table, flag: sa.Column[bool]) -> list[tuple[str, datetime, int, int]]:
    """(run_id, published at, rows, rows with ``flag`` set) of each run kept in a published table, newest first."""
    query = (
        sa.select(
            table.c.run_id,
            sa.func.max(table.c.created_at).label("created_at"),
            sa.func.count(),
            sa.func.sum(sa.case((flag, 1), else_=0)),
        )
        .group_by(table.c.run_id)
        .order_by(sa.desc("created_at"), table.c.run_id.desc())
    )
    with engine.connect() as connection:
        return [(run_id, aware(at), int(rows), int(flagged)) for run_id, at, rows, flagged in connection.execute(query)]
