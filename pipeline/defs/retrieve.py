"""Retrieve assets: the queries and each query's top-k candidate chunks (hybrid dense + BM25 by default)."""

from typing import Literal

import dagster as dg
from pydantic import Field

from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.ingest import lexical_index, vector_index
from pipeline.defs.policies import AFTER_UPSTREAM_SETTLES, ONCE_WHEN_MISSING, STEP_RETRY_POLICY
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.embedding import Embedder
from pipeline.inputs import InputUnavailable, display_location
from pipeline.queries import QueriesFileError, load_queries
from pipeline.retrieve import (
    Fusion,
    SearchIndexes,
    candidate_rankings,
    lexical_candidates,
    page_sizes_for,
    retrieve_candidates,
    synced_search_indexes,
)
from pipeline.store.state import StateStore
from pipeline.tables import markdown_table

GROUP = "retrieve"


@dg.asset(
    group_name=GROUP,
    kinds={"yaml"},
    retry_policy=STEP_RETRY_POLICY,
    automation_condition=ONCE_WHEN_MISSING,
    description=(
        "Questions the support bot must answer, read from the queries file (YAML or JSONL, each {id, query}). "
        "Materialised once by itself on a fresh deployment; queries_file_sensor follows changes to the file."
    ),
)
def queries(files: PipelineFilesResource, state_store: StateStoreResource) -> dg.MaterializeResult:
    # The previous queries stay stored on failure: a broken file must not empty the context sets.
    try:
        items = load_queries(files.queries_path)
    except QueriesFileError as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    except InputUnavailable as error:
        # A server error or timeout may pass: the step's retry policy tries again.
        raise dg.Failure(str(error)) from None
    state_store.get().rankings.replace_queries(items)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(items),
            "path": display_location(files.queries_path),
            "preview": dg.MetadataValue.md(
                markdown_table(["id", "query"], [(item.query_id, item.query) for item in items], limit=20)
            ),
        }
    )


class CandidatesConfig(dg.Config):
    """How many candidates a query gets and how the dense and BM25 rankings are fused (shared with evaluation)."""

    top_k: int = Field(default=50, ge=1, le=1000, description="Candidates per query handed to the reranker.")
    depth: int | None = Field(
        default=None, ge=1, le=1000, description="Chunks each retriever contributes before fusion; unset = 2 × top_k."
    )
    rrf_k: int = Field(default=Fusion().rrf_k, ge=0, description="Reciprocal-rank fusion constant.")
    lexical_weight: float = Field(
        default=Fusion().lexical_weight, ge=0, description="Weight of the BM25 ranking in the fusion (dense weighs 1)."
    )
    page_support_weight: float = Field(
        default=Fusion().page_support_weight,
        ge=0,
        description=(
            "Page support (0 = off): each dense candidate's cosine plus this weight × the mean of its page's "
            "three best chunk scores among the 400 nearest. Raises the retrieval order's nDCG, lowers the pages "
            "the candidates reach; measure it with retrieval_evaluation first (docs/evaluation.md)."
        ),
    )

    def fusion(self) -> Fusion:
        return Fusion(
            rrf_k=self.rrf_k,
            lexical_weight=self.lexical_weight,
            depth=self.depth,
            page_support_weight=self.page_support_weight,
        )


class RetrieveConfig(CandidatesConfig):
    retriever: Literal["hybrid", "dense", "lexical"] = Field(
        default="hybrid", description="hybrid: dense and BM25 fused by reciprocal rank; or either one alone."
    )


def synced_indexes(
    context: dg.AssetExecutionContext,
    store: StateStore,
    files: PipelineFilesResource,
    chroma: ChromaResource,
    model: Embedder,
) -> SearchIndexes:
    """The embedding model's Chroma collection and the lexical index, restored from the state store first."""
    return synced_search_indexes(store, chroma.get(model), files.lexical_index(), context.log.info)


@dg.asset(
    group_name=GROUP,
    deps=[queries, vector_index, lexical_index],
    kinds={"chroma"},
    pool="chroma",
    retry_policy=STEP_RETRY_POLICY,
    automation_condition=AFTER_UPSTREAM_SETTLES,
    description=(
        "Each query's top-k chunks: by default the union of the dense (Chroma, the configured embedding model's "
        "collection) and BM25 rankings fused by reciprocal rank and deduplicated; the stored score is the fused "
        "score (cosine or BM25 with a single retriever). The candidates record the embedding model."
    ),
)
def retrieved_candidates(
    context: dg.AssetExecutionContext,
    config: RetrieveConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    store = state_store.get()
    model = embedder.get()
    indexes = synced_indexes(context, store, files, chroma, model)
    if config.retriever == "lexical":
        candidates = lexical_candidates(store.rankings.queries(), indexes.lexical, config.top_k)
    else:
        fusion = config.fusion()
        candidates = retrieve_candidates(
            store.rankings.queries(),
            indexes.vectors,
            model,
            config.top_k,
            lexical=indexes.lexical if config.retriever == "hybrid" else None,
            fusion=fusion,
            page_sizes=page_sizes_for(fusion, store),
        )
    # BM25 alone embeds nothing: its candidates come from no embedding model.
    embedding_model = None if config.retriever == "lexical" else indexes.vectors.model
    store.rankings.replace_candidates(candidate_rankings(candidates), embedding_model=embedding_model)
    counts = [len(ranked) for ranked in candidates.values()]
    return dg.MaterializeResult(
        metadata={
            "queries": len(candidates),
            "retriever": config.retriever,
            "embedding_model": embedding_model or "none (BM25 alone)",
            "top_k": config.top_k,
            "page_support_weight": config.page_support_weight,
            "candidates_total": sum(counts),
            "candidates_from_both": sum(
                1 for ranked in candidates.values() for c in ranked if c.dense_rank and c.lexical_rank
            ),
            "candidates_only_lexical": sum(
                1 for ranked in candidates.values() for c in ranked if c.lexical_rank and not c.dense_rank
            ),
            "queries_without_candidates": sum(1 for count in counts if count == 0),
            "vectors_restored": indexes.vectors_restored,
            "lexical_index_rebuilt": indexes.lexical_rebuilt,
        }
    )
