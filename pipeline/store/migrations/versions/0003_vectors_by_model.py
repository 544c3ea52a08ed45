"""Vectors keyed by embedding model and embedded text; the embedding model of retrievals and context sets.

Chunks' embeddings and the retained embeddings of deleted chunks and header lines move into one
table of vectors keyed by (model, sha256 of the embedded text), under all-MiniLM-L6-v2, the only
model that embedded them; chunks keep the hash of their embedding text instead of a vector. A
retained vector keeps its retention clock: it was released when it was retained. Candidates and
context sets get the embedding model of the retrieval behind them (None for rows from before).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The one model that embedded anything before this revision (pipeline.embedding.MODEL_NAME then).
LOCAL_MODEL = "all-MiniLM-L6-v2"
# Chunks read and rewritten per statement: bounded memory on a corpus of any size.
_WINDOW = 500
_CONTEXT_SET_COLUMNS = (
    "run_id, query_id, query, position, model, reranked, api_version, reason_not_reranked, "
    "token_budget, tokens, passages, created_at"
)
_LATEST_VIEW = """
CREATE VIEW pipeline_latest_context_sets AS
SELECT {columns}
FROM pipeline_context_sets
WHERE run_id = (SELECT run_id FROM pipeline_context_sets ORDER BY created_at DESC, run_id DESC LIMIT 1)
"""

_chunks = sa.table(
    "pipeline_chunks",
    sa.column("chunk_id", sa.Text),
    sa.column("embedding_text", sa.Text),
    sa.column("embedding", sa.LargeBinary),
    sa.column("embedding_hash", sa.Text),
)
_vectors = sa.table(
    "pipeline_vectors",
    sa.column("model", sa.Text),
    sa.column("text_hash", sa.Text),
    sa.column("embedding", sa.LargeBinary),
    sa.column("released_at", sa.DateTime(timezone=True)),
)
_retained = sa.table(
    "pipeline_retained_embeddings",
    sa.column("model", sa.Text),
    sa.column("text_hash", sa.Text),
    sa.column("embedding", sa.LargeBinary),
    sa.column("retained_at", sa.DateTime(timezone=True)),
)
_models = sa.table(
    "pipeline_embedding_models",
    sa.column("model", sa.Text),
    sa.column("dimensions", sa.Integer),
    sa.column("configured_at", sa.DateTime(timezone=True)),
)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chunk_windows(connection: sa.Connection, *columns: str):
    """The chunks' rows in chunk ID order, ``_WINDOW`` at a time (keyset pages: no offset rescans)."""
    last = ""
    while True:
        rows = connection.execute(
            sa.select(*(_chunks.c[name] for name in ("chunk_id", *columns)))
            .where(_chunks.c.chunk_id > last)
            .order_by(_chunks.c.chunk_id)
            .limit(_WINDOW)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].chunk_id


def _move_chunk_vectors(connection: sa.Connection) -> None:
    """Give every chunk its text's hash, and its vector (if any) to the vectors table as in use."""
    known = sa.select(_vectors.c.text_hash).where(_vectors.c.model == LOCAL_MODEL)
    for rows in _chunk_windows(connection, "embedding_text", "embedding"):
        hashes = {row.chunk_id: _text_hash(row.embedding_text) for row in rows}
        # The blob is cleared with it, so PostgreSQL can reuse its space once the column is dropped.
        connection.execute(
            sa.update(_chunks)
            .where(_chunks.c.chunk_id == sa.bindparam("target_id"))
            .values(embedding_hash=sa.bindparam("digest"), embedding=None),
            [{"target_id": chunk_id, "digest": digest} for chunk_id, digest in hashes.items()],
        )
        embedded = {hashes[row.chunk_id]: row.embedding for row in rows if row.embedding is not None}
        if not embedded:
            continue
        stored = set(connection.scalars(known.where(_vectors.c.text_hash.in_(list(embedded)))))
        # A retained vector of the same text is in use again; chunks of one text share one vector.
        if stored:
            connection.execute(
                sa.update(_vectors)
                .where(_vectors.c.model == LOCAL_MODEL, _vectors.c.text_hash.in_(list(stored)))
                .values(released_at=None)
            )
        fresh = [
            {"model": LOCAL_MODEL, "text_hash": digest, "embedding": blob, "released_at": None}
            for digest, blob in embedded.items()
            if digest not in stored
        ]
        if fresh:
            connection.execute(sa.insert(_vectors), fresh)


def _record_local_model(connection: sa.Connection) -> None:
    """The local model's row, when it embedded anything: configured until now."""
    blob = connection.scalar(sa.select(_vectors.c.embedding).where(_vectors.c.model == LOCAL_MODEL).limit(1))
    if blob is not None:
        connection.execute(
            sa.insert(_models),
            [{"model": LOCAL_MODEL, "dimensions": len(blob) // 4, "configured_at": datetime.now(UTC)}],
        )


def _columns(inspector: sa.Inspector, table: str) -> set[str]:
    return {column["name"] for column in inspector.get_columns(table)}


def upgrade() -> None:
    """Each change only where the database lacks it, like 0002: a database whose version table was lost
    (stamped by its columns, or upgraded from the start) may have some of them already."""
    connection = op.get_bind()
    inspector = sa.inspect(connection)
    op.create_table(
        "pipeline_embedding_models",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("dimensions", sa.Integer),
        sa.Column("configured_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_vectors",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("text_hash", sa.Text, primary_key=True),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True)),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_vectors_released_at", "pipeline_vectors", ["released_at"], if_not_exists=True)
    if inspector.has_table("pipeline_retained_embeddings"):
        connection.execute(
            sa.insert(_vectors).from_select(
                ["model", "text_hash", "embedding", "released_at"],
                sa.select(_retained.c.model, _retained.c.text_hash, _retained.c.embedding, _retained.c.retained_at),
            )
        )
        op.drop_table("pipeline_retained_embeddings")
    if "embedding" in _columns(inspector, "pipeline_chunks"):
        op.add_column("pipeline_chunks", sa.Column("embedding_hash", sa.Text))
        _move_chunk_vectors(connection)
        _record_local_model(connection)
        with op.batch_alter_table("pipeline_chunks") as chunks:
            chunks.alter_column("embedding_hash", existing_type=sa.Text, nullable=False)
            chunks.drop_column("embedding")
            chunks.create_index("ix_pipeline_chunks_embedding_hash", ["embedding_hash"])
    if "embedding_model" not in _columns(inspector, "pipeline_candidates"):
        op.add_column("pipeline_candidates", sa.Column("embedding_model", sa.Text))
    if "embedding_model" not in _columns(inspector, "pipeline_context_sets"):
        op.execute("DROP VIEW IF EXISTS pipeline_latest_context_sets")
        op.add_column("pipeline_context_sets", sa.Column("embedding_model", sa.Text))
        op.execute(_LATEST_VIEW.format(columns=f"{_CONTEXT_SET_COLUMNS}, embedding_model"))


def downgrade() -> None:
    """Back to one vector per chunk: the local model's vectors return to their chunks, its released ones
    to the retained embeddings; other models' vectors are dropped (code before this revision embedded
    with the local model only)."""
    connection = op.get_bind()
    # SQLite copies a table to drop a column, which a view reading it must not be there to see.
    op.execute("DROP VIEW pipeline_latest_context_sets")
    with op.batch_alter_table("pipeline_context_sets") as context_sets:
        context_sets.drop_column("embedding_model")
    op.execute(_LATEST_VIEW.format(columns=_CONTEXT_SET_COLUMNS))
    with op.batch_alter_table("pipeline_candidates") as candidates:
        candidates.drop_column("embedding_model")
    op.create_table(
        "pipeline_retained_embeddings",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("text_hash", sa.Text, primary_key=True),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("retained_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pipeline_retained_embeddings_retained_at", "pipeline_retained_embeddings", ["retained_at"])
    released = sa.and_(_vectors.c.model == LOCAL_MODEL, _vectors.c.released_at.is_not(None))
    connection.execute(
        sa.insert(_retained).from_select(
            ["model", "text_hash", "embedding", "retained_at"],
            sa.select(_vectors.c.model, _vectors.c.text_hash, _vectors.c.embedding, _vectors.c.released_at).where(
                released
            ),
        )
    )
    op.add_column("pipeline_chunks", sa.Column("embedding", sa.LargeBinary))
    local = sa.select(_vectors.c.embedding).where(
        _vectors.c.model == LOCAL_MODEL, _vectors.c.text_hash == _chunks.c.embedding_hash
    )
    connection.execute(sa.update(_chunks).values(embedding=local.scalar_subquery()))
    with op.batch_alter_table("pipeline_chunks") as chunks:
        chunks.drop_index("ix_pipeline_chunks_embedding_hash")
        chunks.drop_column("embedding_hash")
    op.drop_table("pipeline_vectors")
    op.drop_table("pipeline_embedding_models")
