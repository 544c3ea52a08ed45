"""The sizes the token-limit check counted per chunk, so that it counts only new chunks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


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


def downgrade() -> None:
    op.drop_table("pipeline_chunk_sizes")
