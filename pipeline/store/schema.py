"""The pipeline's tables, in one place: what every store reads and writes, and what migrations reach.

The tables are created and changed only by the Alembic revisions in ``pipeline/store/migrations``
(run by :func:`pipeline.store.migrate.upgrade_schema`); a change here needs a new revision, and
``tests/test_migrations.py`` fails while the two differ. Tables carry a ``pipeline_`` prefix because
on Heroku they share a database with Dagster's own run and event storage.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

pages = sa.Table(
    "pipeline_pages",
    metadata,
    # A URL belongs to one source: the first that crawled it (see PageStore.save).
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, nullable=False, index=True),
    sa.Column("final_url", sa.Text),
    sa.Column("status", sa.Integer),
    sa.Column("content_type", sa.Text),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("content_hash", sa.Text, index=True),
    sa.Column("html_zlib", sa.LargeBinary),
    # The links to follow from the stored body ([url, ...]); a page answering 304 is not
    # parsed again, so without them pages only it links to would never be found.
    sa.Column("links", sa.JSON),
    sa.Column("fetched_at", sa.DateTime(timezone=True)),
    sa.Column("last_seen_at", sa.DateTime(timezone=True)),
    # Since when the page answers a temporary redirect (302, 303, 307) instead of itself; the
    # stored body stands meanwhile, and a normal answer clears it.
    sa.Column("redirected_since", sa.DateTime(timezone=True)),
)

documents = sa.Table(
    "pipeline_documents",
    metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, nullable=False, index=True),
    # Which page content and extractor produced this row: a mismatch means re-extract.
    sa.Column("page_hash", sa.Text, nullable=False),
    sa.Column("extractor_version", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("sections", sa.JSON, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    # Whether any section has text, so the pages_yield_text check counts without reading every section.
    sa.Column("has_text", sa.Boolean),
    # Which document content and chunker settings the current chunks came from.
    sa.Column("chunked_key", sa.Text),
    sa.Column("extracted_at", sa.DateTime(timezone=True)),
)

chunks = sa.Table(
    "pipeline_chunks",
    metadata,
    sa.Column("chunk_id", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False, index=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("heading_path", sa.JSON, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("embedding_text", sa.Text, nullable=False),
    sa.Column("token_count", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    # sha256 hex of embedding_text: the chunk's vector of each model is the row of ``vectors`` with
    # this hash, so chunks of the same text share one vector and an edit keeps untouched ones.
    sa.Column("embedding_hash", sa.Text, nullable=False, index=True),
)

# The chunk IDs of a source without reading its chunks' rows (text and embedding, several KB each):
# a no-change refresh asks for them in every stage and check, which read 50 MB of table pages each
# time for the PostgreSQL manual's 12,700 chunks on SQLite.
sa.Index("ix_pipeline_chunks_source_chunk_id", chunks.c.source, chunks.c.chunk_id)

# What the chunks_within_token_limits check counted for each chunk (cl100k tokens, MiniLM word
# pieces, characters), so that it counts only chunks it has not seen: a chunk ID hashes everything
# its embedding text is made of, so a row stays true for as long as its chunk exists. ``measure``
# names what counted (the cl100k encoding and the word-piece model); a different measure counts
# again. Rows of deleted chunks are pruned by the check.
chunk_sizes = sa.Table(
    "pipeline_chunk_sizes",
    metadata,
    sa.Column("chunk_id", sa.Text, primary_key=True),
    sa.Column("measure", sa.Text, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("word_pieces", sa.Integer, nullable=False),
    sa.Column("characters", sa.Integer, nullable=False),
)

# Sources dropped from the sources file whose data is kept until their grace period ends
# (``pipeline/source_sync.py``); a source that is listed again leaves this table.
orphaned_sources = sa.Table(
    "pipeline_orphaned_sources",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("orphaned_at", sa.DateTime(timezone=True), nullable=False),
)

# The local rerank scorer's heading feature embeds each chunk's context header line
# alone; headers are shared by a section's chunks, so they are embedded once at ingest. Always
# all-MiniLM-L6-v2, whatever model embeds the chunks: the feature is the local stand-in's own.
header_embeddings = sa.Table(
    "pipeline_header_embeddings",
    metadata,
    sa.Column("header", sa.Text, primary_key=True),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
)

# Every embedding model that has embedded chunks here. Vectors of a model that has not been the
# configured one for PIPELINE_VECTOR_RETENTION_DAYS are deleted with its row, so that switching
# models does not leave the old model's vectors in the database for ever.
embedding_models = sa.Table(
    "pipeline_embedding_models",
    metadata,
    # As the embedder names it: "all-MiniLM-L6-v2", or a remote model ID @ its endpoint's host.
    sa.Column("model", sa.Text, primary_key=True),
    # Length of its vectors; None until its first vector is stored.
    sa.Column("dimensions", sa.Integer),
    # When an ingest last embedded with it as the configured model.
    sa.Column("configured_at", sa.DateTime(timezone=True), nullable=False),
)

# Vectors by model and by the exact text embedded (float32 little-endian), kept so Chroma can be
# rebuilt without re-embedding, and kept for PIPELINE_VECTOR_RETENTION_DAYS after no chunk uses
# them any more, so that text coming back (a page lost in a 404 storm, an edit undone, a switch
# back to an earlier model) is not embedded again. Header lines deleted from header_embeddings
# are kept here the same way, under all-MiniLM-L6-v2.
vectors = sa.Table(
    "pipeline_vectors",
    metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("text_hash", sa.Text, primary_key=True),  # sha256 hex of the UTF-8 text
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    # When the last chunk of this text went; None while a chunk has it.
    sa.Column("released_at", sa.DateTime(timezone=True), index=True),
)

queries = sa.Table(
    "pipeline_queries",
    metadata,
    sa.Column("query_id", sa.Text, primary_key=True),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
)

candidates = sa.Table(
    "pipeline_candidates",
    metadata,
    sa.Column("query_id", sa.Text, primary_key=True),
    sa.Column("retrieval_rank", sa.Integer, primary_key=True),
    sa.Column("chunk_id", sa.Text, nullable=False),
    sa.Column("retrieval_score", sa.Float, nullable=False),
    # The embedding model of the dense retrieval that found the candidates; None: BM25 alone.
    sa.Column("embedding_model", sa.Text),
)

reranked = sa.Table(
    "pipeline_reranked",
    metadata,
    sa.Column("query_id", sa.Text, primary_key=True),
    # Rerank outcome per query: the ranking plus how it was obtained.
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("reranked", sa.Boolean, nullable=False),
    sa.Column("api_version", sa.Text),
    sa.Column("search_units", sa.Integer, nullable=False, default=0),
    sa.Column("cached", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text),
    # [[chunk_id, relevance_score], ...] highest score first; empty when not reranked.
    sa.Column("ranking", sa.JSON, nullable=False),
    # What the ranking was computed for (pipeline.ranking.candidates_hash): it is published only
    # while the query's stored candidates still hash the same.
    sa.Column("candidates_hash", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rerank_cache = sa.Table(
    "pipeline_rerank_cache",
    metadata,
    sa.Column("cache_key", sa.Text, primary_key=True),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The published output, one row per run and query, for the downstream QA system to query
# (``pipeline_latest_context_sets`` holds the newest run's rows). Each column is a field of
# ``pipeline.store.records.ContextSet``, as ``ContextSet.published`` writes it.
CONTEXT_SETS_TABLE = "pipeline_context_sets"
context_sets = sa.Table(
    CONTEXT_SETS_TABLE,
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("query_id", sa.Text, primary_key=True),
    sa.Column("query", sa.Text, nullable=False),
    # The query's place in the queries file.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("reranked", sa.Boolean, nullable=False),
    sa.Column("api_version", sa.Text),
    sa.Column("reason_not_reranked", sa.Text),
    sa.Column("token_budget", sa.Integer, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    # [{rank, chunk_id, url, title, heading_path, text, tokens, retrieval_rank, retrieval_score, rerank_score}, ...]
    sa.Column("passages", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    # The embedding model of the retrieval behind the passages; None: BM25 alone, or published
    # before the model was recorded.
    sa.Column("embedding_model", sa.Text),
    # ContextSet.content_hash() of the row: an answer is published only beside the context set it
    # was computed from (see LATEST_ANSWERS_VIEW).
    sa.Column("content_hash", sa.Text),
)
CONTEXT_SET_FIELDS = (
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

# The newest run's rows of the context sets table, a view the migrations create (a new column of
# the table needs a revision that creates the view again). Here as SQLAlchemy reads it: typed
# columns, so passages come back as JSON on SQLite too.
LATEST_CONTEXT_SETS_VIEW = "pipeline_latest_context_sets"
latest_context_sets_view = sa.table(
    LATEST_CONTEXT_SETS_VIEW, *[sa.column(column.name, column.type) for column in context_sets.columns]
)

# The cited answers, one row per run and query, beside the context sets they answer. Each column
# but run_id, position and created_at is a field of ``pipeline.store.records.Answer``, as
# ``Answer.published`` writes it.
ANSWERS_TABLE = "pipeline_answers"
answers = sa.Table(
    ANSWERS_TABLE,
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("query_id", sa.Text, primary_key=True),
    # The query's place in the context sets the run answered.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    # False for an abstention ("NOT IN THE DOCS: ...") and for a failed answer.
    sa.Column("answered", sa.Boolean, nullable=False),
    # None when the answer failed: nothing is invented in its place.
    sa.Column("answer", sa.Text),
    # [{number, chunk_id, url}, ...]: the passages the answer cites, in order of first mention.
    sa.Column("citations", sa.JSON, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("prompt_version", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    # From the answer cache: its tokens were spent by an earlier run.
    sa.Column("cached", sa.Boolean, nullable=False),
    # The content hash of the context set the answer was computed from.
    sa.Column("context_set_hash", sa.Text, nullable=False),
    # The failure's code (http_500, timeout, ...) when the answer failed; None otherwise.
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
ANSWER_FIELDS = (
    "query_id",
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
)

# The newest run's answers whose context set is still the newest one of its query, with the same
# content: an answer is never published beside a context set it was not computed from. Created by
# the migrations, like the context sets' view.
LATEST_ANSWERS_VIEW = "pipeline_latest_answers"
latest_answers_view = sa.table(
    LATEST_ANSWERS_VIEW, *[sa.column(column.name, column.type) for column in answers.columns]
)

# Completions by chat model, prompt version, generation settings and context-set content, so an
# unchanged refresh spends no tokens; failures are never cached.
answer_cache = sa.Table(
    "pipeline_answer_cache",
    metadata,
    sa.Column("cache_key", sa.Text, primary_key=True),
    sa.Column("completion", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
