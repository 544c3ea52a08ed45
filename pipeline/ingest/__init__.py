"""Ingestion stages: crawl results → pages → documents → chunks → vectors, one module per stage.

Each stage reconciles its table in the state store with the stage upstream of it,
so it only does work for what changed and a run interrupted anywhere is completed
by running again (the approach of LangChain's indexing API record manager, applied
per stage):

- ``pages.record_crawl`` stores new and changed page bodies, refreshes validators of
  unchanged pages, and deletes pages the crawler reports gone or out of scope, but only
  once the crawl finished and those removals pass the deletion guard
  (``pipeline/removal_guard.py``). A failed fetch never deletes anything, nor does a
  temporary redirect.
- ``documents.extract_pages`` extracts only pages whose body (or the extractor) changed.
- ``chunks.chunk_documents`` rechunks only documents whose text (or the chunker settings)
  changed; chunks that survive an edit are left as they are.
- ``vectors.index_chunks`` embeds the chunk texts that have no vector of the configured
  embedding model yet, each once (vectors are kept by model and text, so a text that a deleted
  chunk or an earlier switch to this model left within the retention is not embedded again),
  then makes that model's Chroma collection hold exactly the stored chunks: vanished IDs are
  deleted, missing ones restored from stored vectors (no re-embedding after Chroma is wiped).
- ``sync_lexical`` (``pipeline/store/lexical.py``) does the same for the BM25 index,
  and ``consistency.check_index_consistency`` proves both hold exactly the stored chunks.
"""
