"""Ingest assets, one partition per documentation source: crawl → extract → chunk → vector and lexical index."""

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from pipeline import settings
from pipeline.check_reports import chunk_limits, extraction_coverage, source_freshness
from pipeline.chunking import ChunkingConfig
from pipeline.crawl.crawler import DEFAULT_USER_AGENT, KnownPage, crawl
from pipeline.crawl.sources import Source, load_sources
from pipeline.defs.check_results import must_act_result
from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.partitions import SOURCE_PARTITIONS, source_partitions
from pipeline.defs.policies import STEP_RETRY_POLICY
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.embedding import MAX_WORD_PIECES, MODEL_NAME
from pipeline.embedding.contract import MAX_INPUT_CHARACTERS
from pipeline.ingest.chunks import chunk_documents
from pipeline.ingest.consistency import check_index_consistency
from pipeline.ingest.documents import extract_pages
from pipeline.ingest.pages import record_crawl
from pipeline.ingest.vectors import index_chunks
from pipeline.inputs import display_location
from pipeline.removal_guard import DEFAULT_MAX_REMOVAL_SHARE, REMOVAL_FLOOR, RemovalBlocked, RemovalLimits
from pipeline.store.lexical import sync_lexical
from pipeline.store.orphans import orphaned_pages
from pipeline.tables import markdown_table

GROUP = "ingest"


def _source(files: PipelineFilesResource, name: str) -> Source:
    for source in load_sources(files.sources_path):
        if source.name == name:
            return source
    raise dg.Failure(
        f"source {name!r} is not in the sources file {display_location(files.sources_path)}; "
        "it was removed or renamed since the partition was created",
        allow_retries=False,
    )


class CrawlConfig(dg.Config):
    user_agent: str = Field(default=DEFAULT_USER_AGENT, description="User-Agent sent to documentation sites.")
    ignore_validators: bool = Field(
        default=False, description="Refetch every page in full instead of conditional GETs (ETag / Last-Modified)."
    )
    max_removal_share: float = Field(
        default=DEFAULT_MAX_REMOVAL_SHARE,
        ge=0,
        le=1,
        description=(
            "Largest share of the source's stored pages one run may remove (gone, redirected, out of scope, "
            f"disallowed, ...); past it the step fails and nothing is deleted. Up to {REMOVAL_FLOOR} pages always pass."
        ),
    )
    allow_full_removal: bool = Field(
        default=False,
        description="Let this run remove any number of the source's stored pages, all of them included.",
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    retry_policy=STEP_RETRY_POLICY,
    kinds={"python"},
    description=(
        "Pages of one documentation source, fetched politely (robots.txt, per-host limits, retries) with "
        "conditional GETs. New and changed bodies are stored; pages that are gone or out of scope are deleted "
        "once the crawl finished, unless that removes more than max_removal_share of them (or all), which fails "
        "the step before anything is deleted; a failed fetch or a temporary redirect deletes nothing. Pages an "
        "orphaned source (dropped from the sources file) holds in this source's scope are taken over with their "
        "validators, chunks and vectors."
    ),
)
def crawled_pages(
    context: dg.AssetExecutionContext,
    config: CrawlConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
) -> dg.MaterializeResult:
    source = _source(files, context.partition_key)
    store = state_store.get()
    known = {}
    # Pages of an orphaned source in this one's scope are verified (and taken over) like its own:
    # a renamed source answers 304s for them instead of fetching and embedding everything again.
    stored = {**orphaned_pages(store, source.in_scope), **store.pages.known(source.name)}
    for url in list(stored):
        # Dropped as converted: the crawl holds every known page, and a second copy would double that.
        page = stored.pop(url)
        # A page stored before its links were kept is fetched in full once: a 304 would hide its links.
        conditional = not config.ignore_validators and page.links is not None
        known[url] = KnownPage(
            url=url,
            etag=page.etag if conditional else None,
            last_modified=page.last_modified if conditional else None,
            content_hash=page.content_hash,
            links=page.links or (),
            redirected_since=page.redirected_since,
        )
    redirect_days = settings.number("PIPELINE_TEMPORARY_REDIRECT_DAYS", minimum=0)
    results = crawl(source, known, user_agent=config.user_agent, temporary_redirect_grace=timedelta(days=redirect_days))
    limits = RemovalLimits(max_share=config.max_removal_share, allow_full_removal=config.allow_full_removal)
    try:
        report = record_crawl(store, source.name, results, limits)
    except RemovalBlocked as blocked:
        value = str(blocked.value).lower()
        raise dg.Failure(
            f"{blocked}. Nothing was deleted, and the index and context sets stay as they were. If the site "
            f"really lost these pages, materialise {source.name} again with the run config "
            f"ops: {{crawled_pages: {{config: {{{blocked.knob}: {value}}}}}}}",
            allow_retries=False,
        ) from None
    context.log.info(f"crawled {source.name}: {report.metadata()}")
    return dg.MaterializeResult(
        metadata={
            **report.metadata(),
            "failures_by_reason": dict(report.failures_by_reason),
            "removals_by_reason": dict(report.removals_by_reason),
            # Why pages of a host failed or were never found: robots.txt unavailable, a broken sitemap.
            "robots": dict(results.stats.robots),
            "sitemap_errors": dict(results.stats.sitemap_errors),
            "failures": dg.MetadataValue.md(markdown_table(["url", "reason"], report.failures, limit=50)),
            "pages_stored": store.pages.count(source.name),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    retry_policy=STEP_RETRY_POLICY,
    deps=[crawled_pages],
    kinds={"python"},
    description=(
        "Clean text of each page with its title and heading structure (navigation, headers, footers, "
        "scripts and sidebars dropped; code blocks kept). Only pages whose body changed are re-extracted."
    ),
)
def extracted_documents(context: dg.AssetExecutionContext, state_store: StateStoreResource) -> dg.MaterializeResult:
    store = state_store.get()
    report = extract_pages(store, context.partition_key)
    for url, error in report.errors[:20]:
        context.log.warning(f"could not extract {url}: {error}")
    return dg.MaterializeResult(metadata={**report.metadata(), "dagster/row_count": report.total_documents})


class ChunkConfig(dg.Config):
    max_tokens: int = Field(
        default=ChunkingConfig().max_tokens, ge=32, description="cl100k tokens per chunk, header included."
    )
    overlap_tokens: int = Field(default=ChunkingConfig().overlap_tokens, ge=0)
    merge_below_tokens: int = Field(
        default=ChunkingConfig().merge_below_tokens,
        ge=0,
        description="Heading sections with fewer cl100k tokens are joined to their neighbours; 0 keeps each apart.",
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    retry_policy=STEP_RETRY_POLICY,
    deps=[extracted_documents],
    kinds={"python"},
    description=(
        "Heading-aware chunks of at most max_tokens cl100k tokens with overlap (sections under merge_below_tokens "
        "joined to their neighbours), each within the local embedding "
        "model's 256 word-piece window and the embeddings endpoint's 2,048 characters per input, whichever model "
        "embeds them. IDs hash the URL and content, so unchanged input keeps its IDs."
    ),
)
def document_chunks(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    state_store: StateStoreResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    chunking = ChunkingConfig(
        max_tokens=config.max_tokens,
        overlap_tokens=config.overlap_tokens,
        merge_below_tokens=config.merge_below_tokens,
    )
    store = state_store.get()
    report = chunk_documents(store, context.partition_key, chunking, embedder.minilm_word_piece_counts)
    return dg.MaterializeResult(metadata={**report.metadata(), "dagster/row_count": report.total_chunks})


class VectorIndexConfig(dg.Config):
    save_every: int = Field(
        default=256,
        ge=1,
        description=(
            "Texts embedded between saves to the state store and Chroma: "
            "a run killed midway embeds at most this many again."
        ),
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    retry_policy=STEP_RETRY_POLICY,
    deps=[document_chunks],
    kinds={"chroma"},
    pool="chroma",
    description=(
        "The configured embedding model's Chroma collection, kept equal to the stored chunks: only texts without "
        "a vector of that model are embedded, each once, unless a chunk of the same text had one within "
        "PIPELINE_VECTOR_RETENTION_DAYS (it is reused, so switching back to an earlier model embeds nothing); "
        "vanished chunks are deleted; a wiped collection is restored from stored vectors. Vectors unused for "
        "longer than the retention, and models not configured for that long, are deleted. If the embedder fails, "
        "what it embedded is kept and the step fails naming the error codes; the next run embeds the rest."
    ),
)
def vector_index(
    context: dg.AssetExecutionContext,
    config: VectorIndexConfig,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    store = state_store.get()
    model = embedder.get()
    vectors = chroma.get(model)

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded {done}/{total} texts with {model.model}")

    retention = timedelta(days=settings.number("PIPELINE_VECTOR_RETENTION_DAYS", minimum=0))
    report = index_chunks(
        store,
        vectors,
        model,
        context.partition_key,
        # Header lines are the local rerank stand-in's own feature: embedded only by a local model at hand.
        header_embedder=embedder.local_embedder(),
        retention=retention,
        save_every=config.save_every,
        on_progress=progress,
    )
    # Nothing after this step embeds, and the worker's memory peaks in the next one (lexical_index).
    embedder.release_memory()
    metadata = {**report.metadata(), "collection": vectors.name, "collection_count": vectors.count()}
    if not report.complete:
        raise dg.Failure(
            description=report.failure(context.partition_key),
            metadata=metadata,
            allow_retries=not report.configuration_error,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    retry_policy=STEP_RETRY_POLICY,
    deps=[vector_index],
    kinds={"python"},
    description=(
        "BM25 index (bm25s, stemmed) over every stored chunk's title, heading path and text, in the data directory "
        "beside Chroma, for hybrid retrieval. Rebuilt from the state store only when its chunk IDs differ from the "
        "stored ones (about 2 s for 12,700 chunks); runs after vector_index so its check compares both indexes."
    ),
)
def lexical_index(
    context: dg.AssetExecutionContext, files: PipelineFilesResource, state_store: StateStoreResource
) -> dg.MaterializeResult:
    lexical = files.lexical_index()
    report = sync_lexical(state_store.get(), lexical)
    context.log.info(f"lexical index: {report.metadata()}")
    # One index serves every source; the row count is this partition's share of it.
    return dg.MaterializeResult(
        metadata={**report.metadata(), "dagster/row_count": len(lexical.ids(context.partition_key))}
    )


@dg.asset_check(
    asset=lexical_index,
    blocking=True,
    description=(
        "The run's source has the same chunk IDs in the state store, the configured embedding model's Chroma "
        "collection and the lexical index "
        "(every source's, when the check runs on its own). Another source's unfinished run (a worker killed while "
        "embedding) is that source's to finish, so it does not fail this one."
    ),
)
def indexes_match_stored_chunks(
    context: dg.AssetCheckExecutionContext,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.AssetCheckResult:
    source = context.partition_key if context.has_partition_key else None
    vectors = chroma.get(embedder.get())
    consistency = check_index_consistency(state_store.get(), vectors, files.lexical_index(), source)
    return dg.AssetCheckResult(
        passed=consistency.consistent,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=consistency.metadata(),
        description=None
        if consistency.consistent
        else "an index differs from the stored chunks: materialise vector_index and lexical_index",
    )


MIN_TEXT_SHARE = settings.number("PIPELINE_MIN_TEXT_SHARE", minimum=0, maximum=1)
FRESHNESS_MAX_AGE_HOURS = settings.number("PIPELINE_FRESHNESS_MAX_AGE_HOURS", minimum=0.01)


def _checked_sources(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The run's source, or every registered source when the check runs on its own."""
    if context.has_partition_key:
        return [context.partition_key]
    return sorted(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS))


@dg.asset_check(
    asset=extracted_documents,
    description=(
        f"At least {MIN_TEXT_SHARE:.0%} of each source's fetched pages yielded text (PIPELINE_MIN_TEXT_SHARE). "
        "Fewer means pages render their content with JavaScript, sit behind a login or changed layout: "
        "those pages are missing from every answer."
    ),
)
def pages_yield_text(context: dg.AssetCheckExecutionContext, state_store: StateStoreResource) -> dg.AssetCheckResult:
    coverage = extraction_coverage(state_store.get(), _checked_sources(context))
    failing = coverage.below(MIN_TEXT_SHARE)
    return must_act_result(
        not failing,
        coverage.metadata(MIN_TEXT_SHARE),
        problem=(
            f"too few pages yielded text in {', '.join(failing)}: look at pages_without_text and the crawl failures"
        ),
    )


@dg.asset_check(
    asset=document_chunks,
    description=(
        "No chunk exceeds max_tokens cl100k tokens (the limit this run chunked with, header included), the local "
        f"embedding model's {MAX_WORD_PIECES} word pieces, past which its text would be silently cut when embedded, "
        f"nor the {MAX_INPUT_CHARACTERS:,} characters one input of the embeddings endpoint may have. "
        "Each chunk is counted once, when the check first finds it; the limits apply to every stored chunk's count."
    ),
)
def chunks_within_token_limits(
    context: dg.AssetCheckExecutionContext, state_store: StateStoreResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    # Stored chunks always come from the latest chunking settings (a change rechunks), so the
    # limit is this run's document_chunks config, or the default when the check runs alone.
    run_config: Mapping[str, Any] = context.run.run_config
    chunk_config = run_config.get("ops", {}).get("document_chunks", {}).get("config", {})
    max_tokens = int(chunk_config.get("max_tokens", ChunkingConfig().max_tokens))
    limits = chunk_limits(
        state_store.get(),
        _checked_sources(context),
        max_tokens=max_tokens,
        word_piece_counts=embedder.minilm_word_piece_counts,
        word_piece_model=MODEL_NAME,
        max_word_pieces=MAX_WORD_PIECES,
        max_characters=MAX_INPUT_CHARACTERS,
    )
    return must_act_result(
        limits.within,
        limits.metadata(max_tokens, MAX_WORD_PIECES, MAX_INPUT_CHARACTERS),
        problem="chunks over a limit: the chunker is broken, see examples",
    )


@dg.asset_check(
    asset=lexical_index,
    description=(
        f"Every registered source finished a refresh (crawl through lexical_index) within the last "
        f"{FRESHNESS_MAX_AGE_HOURS:g} hours (PIPELINE_FRESHNESS_MAX_AGE_HOURS). Evaluated after each ingest and "
        "every hour by the source_freshness_check schedule."
    ),
)
def sources_refreshed_recently(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    last_refreshed = {}
    for source in context.instance.get_dynamic_partitions(SOURCE_PARTITIONS):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=lexical_index.key, asset_partitions=[source]), limit=1
        ).records
        last_refreshed[source] = records[0].timestamp if records else None
    freshness = source_freshness(last_refreshed, time.time(), FRESHNESS_MAX_AGE_HOURS * 3600)
    overdue = freshness.overdue
    return must_act_result(
        not overdue,
        freshness.metadata(),
        problem=(
            f"overdue: {', '.join(overdue)}; look for failed ingest_source runs or a stopped knowledge_base_refresh"
        ),
    )
