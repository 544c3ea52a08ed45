"""Ingest assets, one partition per documentation source: crawl → extract → chunk → vector and lexical index."""


import dagster as dg
from pydantic import Field

from pipeline.chunking import ChunkingConfig
from pipeline.crawl.crawler import DEFAULT_USER_AGENT, KnownPage, crawl
from pipeline.crawl.sources import Source, load_sources
from pipeline.defs.partitions import source_partitions
from pipeline.defs.resources import ChromaResource, EmbedderResource, PipelineFilesResource, StateStoreResource
from pipeline.ingest import check_index_consistency, chunk_documents, extract_pages, index_chunks, record_crawl
from pipeline.inputs import display_location
from pipeline.store.lexical import sync_lexical

GROUP = "ingest"


def _source(files: PipelineFilesResource, name: str) -> Source:
    for source in load_sources(files.sources_path):
        if source.name == name:
            return source
    raise dg.Failure(
        f"source {name!r} is not in the sources file {display_location(files.sources_path)}; "
        "it was removed or renamed since the partition was created"
    )


class CrawlConfig(dg.Config):
    user_agent: str = Field(default=DEFAULT_USER_AGENT, description="User-Agent sent to documentation sites.")
    ignore_validators: bool = Field(
        default=False, description="Refetch every page in full instead of conditional GETs (ETag / Last-Modified)."
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    kinds={"python"},
    description=(
        "Pages of one documentation source, fetched politely (robots.txt, per-host limits, retries) with "
        "conditional GETs. New and changed bodies are stored; pages that are gone or out of scope are deleted; "
        "a failed fetch deletes nothing."
    ),
)
def crawled_pages(
    context: dg.AssetExecutionContext,
    config: CrawlConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
) -> dg.MaterializeResult:
    source = _source(files, context.partition_key)
    store = state_store.open()
    known = {
        url: KnownPage(
            url=url,
            etag=None if config.ignore_validators else page.etag,
            last_modified=None if config.ignore_validators else page.last_modified,
            content_hash=page.content_hash,
        )
        for url, page in store.known_pages(source.name).items()
    }
    report = record_crawl(store, source.name, crawl(source, known, user_agent=config.user_agent))
    context.log.info(f"crawled {source.name}: {report.metadata()}")
    failures = "\n".join(f"| {url} | {reason} |" for url, reason in report.failures[:50])
    return dg.MaterializeResult(
        metadata={
            **report.metadata(),
            "failures_by_reason": dict(report.failures_by_reason),
            "failures": dg.MetadataValue.md("| url | reason |\n|---|---|\n" + failures if failures else "none"),
            "pages_stored": store.page_count(source.name),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    deps=[crawled_pages],
    kinds={"python"},
    description=(
        "Clean text of each page with its title and heading structure (navigation, headers, footers, "
        "scripts and sidebars dropped; code blocks kept). Only pages whose body changed are re-extracted."
    ),
)
def extracted_documents(context: dg.AssetExecutionContext, state_store: StateStoreResource) -> dg.MaterializeResult:
    store = state_store.open()
    report = extract_pages(store, context.partition_key)
    for url, error in report.errors[:20]:
        context.log.warning(f"could not extract {url}: {error}")
    return dg.MaterializeResult(metadata={**report.metadata(), "dagster/row_count": report.total_documents})


class ChunkConfig(dg.Config):
    max_tokens: int = Field(default=ChunkingConfig().max_tokens, ge=32, description="cl100k tokens per chunk, header included.")
    overlap_tokens: int = Field(default=ChunkingConfig().overlap_tokens, ge=0)


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    deps=[extracted_documents],
    kinds={"python"},
    description=(
        "Heading-aware chunks of at most max_tokens cl100k tokens with overlap, each small enough for the "
        "embedding model's 256 word-piece window. IDs hash the URL and content, so unchanged input keeps its IDs."
    ),
)
def document_chunks(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    state_store: StateStoreResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    chunking = ChunkingConfig(max_tokens=config.max_tokens, overlap_tokens=config.overlap_tokens)
    store = state_store.open()
    report = chunk_documents(store, context.partition_key, chunking, embedder.get())
    return dg.MaterializeResult(metadata={**report.metadata(), "dagster/row_count": report.total_chunks})


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
    deps=[document_chunks],
    kinds={"chroma"},
    pool="chroma",
    description=(
        "The Chroma collection, kept equal to the stored chunks: only chunks without an embedding are embedded "
        "(all-MiniLM-L6-v2, ONNX); vanished chunks are deleted; a wiped collection is restored from stored embeddings."
    ),
)
def vector_index(
    context: dg.AssetExecutionContext,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    store = state_store.open()
    model = embedder.get()
    vectors = chroma.open(model)

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded {done}/{total} chunks")

    report = index_chunks(store, vectors, model, context.partition_key, on_progress=progress)
    return dg.MaterializeResult(
        metadata={**report.metadata(), "collection": chroma.collection, "collection_count": vectors.count()}
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=source_partitions,
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
    report = sync_lexical(state_store.open(), lexical)
    context.log.info(f"lexical index: {report.metadata()}")
    # One index serves every source; the row count is this partition's share of it.
    return dg.MaterializeResult(
        metadata={**report.metadata(), "dagster/row_count": len(lexical.ids(context.partition_key))}
    )


@dg.asset_check(
    asset=lexical_index,
    blocking=True,
    description=(
        "Every source's chunk IDs are the same in the state store, the Chroma collection and the lexical index "
        "(both indexes span all sources, so the check does too)."
    ),
)
def indexes_match_stored_chunks(
    files: PipelineFilesResource, state_store: StateStoreResource, chroma: ChromaResource
) -> dg.AssetCheckResult:
    consistency = check_index_consistency(state_store.open(), chroma.open(), files.lexical_index())
    return dg.AssetCheckResult(
        passed=consistency.consistent,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=consistency.metadata(),
        description=None
        if consistency.consistent
        else "an index differs from the stored chunks: materialise vector_index and lexical_index",
    )
