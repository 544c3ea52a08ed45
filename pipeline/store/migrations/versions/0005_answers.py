"""Cited answers: the answers table and its view, the answer cache, and the content hash of each context set.

Context sets get the content hash of their published dict (stored rows are given theirs here, as
the code computes it), and ``pipeline_latest_answers`` shows the newest run's answers only beside
the newest context set of the same content: an answer is never published for a context set it was
not computed from.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BATCH = 500
_CONTEXT_SET_COLUMNS = (
    "run_id, query_id, query, position, model, reranked, api_version, reason_not_reranked, "
    "token_budget, tokens, passages, created_at, embedding_model"
)
_LATEST_CONTEXT_SETS_VIEW = """
CREATE VIEW pipeline_latest_context_sets AS
SELECT {columns}
FROM pipeline_context_sets
WHERE run_id = (SELECT run_id FROM pipeline_context_sets ORDER BY created_at DESC, run_id DESC LIMIT 1)
"""
_ANSWER_COLUMNS = (
    "run_id",
    "query_id",
    "position",
    "query",
    "answered",
    "answer",
    "citations",
    "model",
    "prompt_version",
    "prompt_tokens",
    "completion_tokens",
    "cached",
    "context_set_hash",
    "error",
    "created_at",
)
_LATEST_ANSWERS_VIEW = f"""
CREATE VIEW pipeline_latest_answers AS
SELECT {", ".join(f"a.{column}" for column in _ANSWER_COLUMNS)}
FROM pipeline_answers a
JOIN pipeline_latest_context_sets c ON c.query_id = a.query_id AND c.content_hash = a.context_set_hash
WHERE a.run_id = (SELECT run_id FROM pipeline_answers ORDER BY created_at DESC, run_id DESC LIMIT 1)
"""
# The fields of a context set's published dict, which its content hash covers.
_PUBLISHED = (
    "query_id",
    "query",
    "model",
    "embedding_model",
    "reranked",
    "api_version",
    "reason_not_reranked",
    "token_budget",
    "tokens",
    "passages",
)
_context_sets = sa.table(
    "pipeline_context_sets",
    sa.column("run_id", sa.Text),
    sa.column("query_id", sa.Text),
    sa.column("query", sa.Text),
    sa.column("model", sa.Text),
    sa.column("embedding_model", sa.Text),
    sa.column("reranked", sa.Boolean),
    sa.column("api_version", sa.Text),
    sa.column("reason_not_reranked", sa.Text),
    sa.column("token_budget", sa.Integer),
    sa.column("tokens", sa.Integer),
    sa.column("passages", sa.JSON),
    sa.column("content_hash", sa.Text),
)


def _content_hash(published: dict) -> str:
    """As ``ContextSet.content_hash`` computes it when this revision is written."""
    payload = json.dumps(published, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _fill_content_hashes() -> None:
    connection = op.get_bind()
    table = _context_sets
    unfilled = sa.select(table.c.run_id, *(table.c[name] for name in _PUBLISHED)).where(table.c.content_hash.is_(None))
    fill = (
        sa.update(table)
        .where(table.c.run_id == sa.bindparam("target_run"), table.c.query_id == sa.bindparam("target_query"))
        .values(content_hash=sa.bindparam("digest"))
    )
    while rows := connection.execute(unfilled.order_by(table.c.run_id, table.c.query_id).limit(_BATCH)).all():
        connection.execute(
            fill,
            [
                {
                    "target_run": row.run_id,
                    "target_query": row.query_id,
                    "digest": _content_hash(
                        {**{name: getattr(row, name) for name in _PUBLISHED}, "reranked": bool(row.reranked)}
                    ),
                }
                for row in rows
            ],
        )


def upgrade() -> None:
    """Each change only where the database lacks it, like 0003: a database whose version table was lost is
    upgraded from the start and may have some of them already."""
    connection = op.get_bind()
    # The answers' view reads the context sets' view, which is created again here.
    op.execute("DROP VIEW IF EXISTS pipeline_latest_answers")
    op.execute("DROP VIEW IF EXISTS pipeline_latest_context_sets")
    columns = {column["name"] for column in sa.inspect(connection).get_columns("pipeline_context_sets")}
    if "content_hash" not in columns:
        op.add_column("pipeline_context_sets", sa.Column("content_hash", sa.Text))
    op.execute(_LATEST_CONTEXT_SETS_VIEW.format(columns=f"{_CONTEXT_SET_COLUMNS}, content_hash"))
    _fill_content_hashes()
    op.create_table(
        "pipeline_answers",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("answered", sa.Boolean, nullable=False),
        sa.Column("answer", sa.Text),
        sa.Column("citations", sa.JSON, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_version", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("context_set_hash", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_answers_created_at", "pipeline_answers", ["created_at"], if_not_exists=True)
    op.execute(_LATEST_ANSWERS_VIEW)
    op.create_table(
        "pipeline_answer_cache",
        sa.Column("cache_key", sa.Text, primary_key=True),
        sa.Column("completion", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("pipeline_answer_cache")
    op.execute("DROP VIEW pipeline_latest_answers")
    op.drop_index("ix_pipeline_answers_created_at", "pipeline_answers")
    op.drop_table("pipeline_answers")
    # SQLite copies a table to drop a column, which a view reading it must not be there to see.
    op.execute("DROP VIEW pipeline_latest_context_sets")
    with op.batch_alter_table("pipeline_context_sets") as context_sets:
        context_sets.drop_column("content_hash")
    op.execute(_LATEST_CONTEXT_SETS_VIEW.format(columns=_CONTEXT_SET_COLUMNS))
