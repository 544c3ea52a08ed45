"""Retrieve assets: the queries and each query's top-k candidate chunks."""


import dagster as dg
from pydantic import Field

from pipeline.defs.ingest import vector_index
from pipeline.defs.resources import ChromaResource, EmbedderResource, PipelineFilesResource, StateStoreResource
from pipeline.queries import QueriesFileError, Query, load_queries
from pipeline.ingest import sync_vectors
from pipeline.retrieve import retrieve_candidates

GROUP = "retrieve"


@dg.asset(
    group_name=GROUP,
    kinds={"yaml"},
    description="Questions the support bot must answer, read from the queries file (YAML or JSONL, each {id, query}).",
)
def queries(files: PipelineFilesResource, state_store: StateStoreResource) -> dg.MaterializeResult:
    try:
        items = load_queries(files.queries_path)
    except QueriesFileError as error:
        # The previous queries stay stored: a broken file must not empty the context sets.
        raise dg.Failure(str(error)) from None
    state_store.open().replace_queries([(item.query_id, item.query) for item in items])
    preview = "\n".join(f"| {item.query_id} | {item.query} |" for item in items[:20])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(items),
            "path": files.queries_path,
            "preview": dg.MetadataValue.md("| id | query |\n|---|---|\n" + preview),
        }
    )


class RetrieveConfig(dg.Config):
    top_k: int = Field(default=50, ge=1, le=1000, description="Candidates per query handed to the reranker.")


@dg.asset(
    group_name=GROUP,
    deps=[queries, vector_index],
    kinds={"chroma"},
    pool="chroma",
    description="Each query's top-k chunks from the vector index, with cosine similarity scores.",
)
def retrieved_candidates(
    context: dg.AssetExecutionContext,
    config: RetrieveConfig,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    store = state_store.open()
    model = embedder.get()
    vectors = chroma.open(model)
    # A fresh dyno starts with an empty local Chroma: restore it before searching it.
    deleted, restored, total = sync_vectors(store, vectors)
    if deleted or restored:
        context.log.info(f"vector index synced with the state store: {restored} restored, {deleted} deleted")
    stored_queries = [Query(query_id, text) for query_id, text in store.load_queries()]
    hits = retrieve_candidates(stored_queries, vectors, model, config.top_k)
    store.replace_candidates({qid: [(hit.chunk_id, hit.score) for hit in ranked] for qid, ranked in hits.items()})
    counts = [len(ranked) for ranked in hits.values()]
    return dg.MaterializeResult(
        metadata={
            "queries": len(hits),
            "top_k": config.top_k,
            "candidates_total": sum(counts),
            "queries_without_candidates": sum(1 for count in counts if count == 0),
            "vectors_restored": restored,
        }
    )
