from pipeline.ingest.vectors import (
    CrawlReport,
    check_index_consistency,
    chunk_documents,
    extract_pages,
    index_chunks,
    record_crawl,
    restore_vectors,
    sync_header_embeddings,
    sync_vectors,
)

__all__ = [
    "CrawlReport",
    "check_index_consistency",
    "chunk_documents",
    "extract_pages",
    "index_chunks",
    "record_crawl",
    "restore_vectors",
    "sync_header_embeddings",
    "sync_vectors",
]
