"""Rankings tied to their candidates, temporary redirects, retained embeddings, orphaned sources.

The changes the code made to the schema after 87b399d and before Alembic, one merge at a time;
a database written by code between those merges is stamped at the baseline too, so each change
is applied only where the database lacks it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _reranked(*, candidates_hash: bool) -> None:
    op.create_table(
        "pipeline_reranked",
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("reranked", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.Text),
        sa.Column("search_units", sa.Integer, nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("ranking", sa.JSON, nullable=False),
        *([sa.Column("candidates_hash", sa.Text, nullable=False)] if candidates_hash else []),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {
        table: {c["name"] for c in inspector.get_columns(table)} for table in ("pipeline_pages", "pipeline_reranked")
    }
    if "candidates_hash" not in columns["pipeline_reranked"]:
        # Rankings were stored by retrieval rank and cannot be tied to the candidates they ranked, so
        # they must never be published again: the table starts empty, and the next rerank run stores
        # them anew from the rerank cache, unbilled.
        op.drop_table("pipeline_reranked")
        _reranked(candidates_hash=True)
    if "redirected_since" not in columns["pipeline_pages"]:
        op.add_column("pipeline_pages", sa.Column("redirected_since", sa.DateTime(timezone=True)))
    op.create_table(
        "pipeline_retained_embeddings",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("text_hash", sa.Text, primary_key=True),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("retained_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_pipeline_retained_embeddings_retained_at",
        "pipeline_retained_embeddings",
        ["retained_at"],
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_orphaned_sources",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("orphaned_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("pipeline_orphaned_sources")
    op.drop_table("pipeline_retained_embeddings")
    with op.batch_alter_table("pipeline_pages") as pages:
        pages.drop_column("redirected_since")
    # Rankings by chunk ID mean nothing to the baseline's code, which read them by retrieval rank.
    op.drop_table("pipeline_reranked")
    _reranked(candidates_hash=False)
