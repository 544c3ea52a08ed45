"""Each document's parent page title, which the chunker puts at the head of its chunks' context header.

Stored documents get NULL: they were extracted before parents were read, and the extractor version
that comes with this column has every page extracted again from its stored body (no fetch), which
fills it in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only where the database lacks it, like 0003: a database whose version table was lost is
    # upgraded from the start and may have it already.
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("pipeline_documents")}
    if "parent_title" not in columns:
        op.add_column("pipeline_documents", sa.Column("parent_title", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_documents") as documents:
        documents.drop_column("parent_title")
