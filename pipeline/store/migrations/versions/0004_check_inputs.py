"""What the checks need without reading every chunk and document: the sizes the token-limit check
counted per chunk (so it counts only new chunks), whether each document has text, and an index
that holds each source's chunk IDs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 500


def upgrade() -> None:
    # Starts empty: the next check counts every chunk once, as it did on every run before. A database
    # written before migrations is stamped at the baseline and may already have it (see 0002).
    op.create_table(
        "pipeline_chunk_sizes",
        sa.Column("chunk_id", sa.Text, primary_key=True),
        sa.Column("measure", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("word_pieces", sa.Integer, nullable=False),
        sa.Column("characters", sa.Integer, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_chunks_source_chunk_id", "pipeline_chunks", ["source", "chunk_id"], if_not_exists=True)
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("pipeline_documents")}
    if "has_text" not in columns:
        op.add_column("pipeline_documents", sa.Column("has_text", sa.Boolean))
    _fill_has_text()


def _fill_has_text() -> None:
    """The stored documents' has_text, from their sections, a batch at a time (as the code now writes it)."""
    documents = sa.table(
        "pipeline_documents", sa.column("url", sa.Text), sa.column("sections", sa.JSON), sa.column("has_text")
    )
    connection = op.get_bind()
    unfilled = sa.select(documents.c.url, documents.c.sections).where(documents.c.has_text.is_(None))
    fill = sa.update(documents).where(documents.c.url == sa.bindparam("target")).values(has_text=sa.bindparam("flag"))
    while rows := connection.execute(unfilled.order_by(documents.c.url).limit(_BATCH)).all():
        connection.execute(
            fill,
            [
                {"target": url, "flag": any(section["text"].strip() for section in sections or [])}
                for url, sections in rows
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_pipeline_chunks_source_chunk_id", "pipeline_chunks")
    with op.batch_alter_table("pipeline_documents") as table:
        table.drop_column("has_text")
    op.drop_table("pipeline_chunk_sizes")
