"""Baseline: the pipeline's tables as the code of 87b399d created them.

Databases that code wrote have no version table; :func:`pipeline.store.migrate.unversioned_revision`
stamps them here. Databases written before it start here instead: as that code did on opening,
this revision replaces their context sets table of the old shape, adds the pages' links column and
creates only the tables they lack. Tables are spelled out rather than taken from
``pipeline.store.schema``, which describes the newest revision.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_CONTEXT_SET_COLUMNS = (
    "run_id, query_id, query, position, model, reranked, api_version, reason_not_reranked, "
    "token_budget, tokens, passages, created_at"
)


def _columns(inspector: sa.Inspector, table: str) -> set[str]:
    return {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()


def _bring_older_shapes_up(inspector: sa.Inspector) -> None:
    if inspector.has_table("pipeline_context_sets") and "passages" not in _columns(inspector, "pipeline_context_sets"):
        # Written before each field had its own column; the next run publishes the context sets again.
        op.execute("DROP VIEW IF EXISTS pipeline_latest_context_sets")
        op.drop_table("pipeline_context_sets")
    if inspector.has_table("pipeline_pages") and "links" not in _columns(inspector, "pipeline_pages"):
        # Such pages are fetched in full once (see crawled_pages) to learn their links.
        op.add_column("pipeline_pages", sa.Column("links", sa.JSON))


def upgrade() -> None:
    _bring_older_shapes_up(sa.inspect(op.get_bind()))
    op.create_table(
        "pipeline_pages",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("final_url", sa.Text),
        sa.Column("status", sa.Integer),
        sa.Column("content_type", sa.Text),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("content_hash", sa.Text),
        sa.Column("html_zlib", sa.LargeBinary),
        sa.Column("links", sa.JSON),
        sa.Column("fetched_at", sa.DateTime(timezone=True)),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_pages_source", "pipeline_pages", ["source"], if_not_exists=True)
    op.create_index("ix_pipeline_pages_content_hash", "pipeline_pages", ["content_hash"], if_not_exists=True)
    op.create_table(
        "pipeline_documents",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("page_hash", sa.Text, nullable=False),
        sa.Column("extractor_version", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("sections", sa.JSON, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("chunked_key", sa.Text),
        sa.Column("extracted_at", sa.DateTime(timezone=True)),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_documents_source", "pipeline_documents", ["source"], if_not_exists=True)
    op.create_table(
        "pipeline_chunks",
        sa.Column("chunk_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("heading_path", sa.JSON, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedding_text", sa.Text, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_chunks_source", "pipeline_chunks", ["source"], if_not_exists=True)
    op.create_index("ix_pipeline_chunks_url", "pipeline_chunks", ["url"], if_not_exists=True)
    op.create_table(
        "pipeline_header_embeddings",
        sa.Column("header", sa.Text, primary_key=True),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_queries",
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_candidates",
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("retrieval_rank", sa.Integer, primary_key=True),
        sa.Column("chunk_id", sa.Text, nullable=False),
        sa.Column("retrieval_score", sa.Float, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_reranked",
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("reranked", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.Text),
        sa.Column("search_units", sa.Integer, nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        # [[retrieval_rank, relevance_score], ...]
        sa.Column("ranking", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_rerank_cache",
        sa.Column("cache_key", sa.Text, primary_key=True),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "pipeline_context_sets",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("query_id", sa.Text, primary_key=True),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("reranked", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.Text),
        sa.Column("reason_not_reranked", sa.Text),
        sa.Column("token_budget", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("passages", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_pipeline_context_sets_created_at", "pipeline_context_sets", ["created_at"], if_not_exists=True)
    # The newest run's context sets, for the downstream QA system.
    if "pipeline_latest_context_sets" not in sa.inspect(op.get_bind()).get_view_names():
        op.execute(
            f"""
            CREATE VIEW pipeline_latest_context_sets AS
            SELECT {_CONTEXT_SET_COLUMNS}
            FROM pipeline_context_sets
            WHERE run_id = (SELECT run_id FROM pipeline_context_sets ORDER BY created_at DESC, run_id DESC LIMIT 1)
            """
        )


def downgrade() -> None:
    op.execute("DROP VIEW pipeline_latest_context_sets")
    for table in (
        "pipeline_context_sets",
        "pipeline_rerank_cache",
        "pipeline_reranked",
        "pipeline_candidates",
        "pipeline_queries",
        "pipeline_header_embeddings",
        "pipeline_chunks",
        "pipeline_documents",
        "pipeline_pages",
    ):
        op.drop_table(table)
