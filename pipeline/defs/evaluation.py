"""The evaluation asset: retrieval quality of every ranking stage on a labelled query set, plotted over time."""

import json

import dagster as dg
from pydantic import Field

from pipeline.defs.context_sets import ContextConfig
from pipeline.defs.ingest import lexical_index, vector_index
from pipeline.defs.policies import STEP_RETRY_POLICY
from pipeline.defs.resources import (
    ChromaResource,
    EmbedderResource,
    PipelineFilesResource,
    RerankResource,
    StateStoreResource,
)
from pipeline.defs.retrieve import CandidatesConfig, synced_indexes
from pipeline.evaluation.labels import LabelFileError, load_labelled_set
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.pipeline import GAIN_METRIC, GAINS, RANKINGS, evaluate_pipeline
from pipeline.ranking import RankingPlan, StoreRerankCache
from pipeline.rerank.client import RerankConfigurationError, RerankSettingRejected

GROUP = "evaluate"
OUTPUT_FILE = "retrieval_evaluation.json"
ASSET_NAME = "retrieval_evaluation"
NOT_BELOW_DENSE = "context_sets_not_below_dense_retrieval"


class EvaluateConfig(CandidatesConfig, ContextConfig):
    """Retrieval and packing knobs (defaults: those of retrieved_candidates and ranked_context_sets)."""

    max_workers: int = Field(
        default=8, ge=1, le=64, description="Questions reranked in parallel (within the rate limit)."
    )


@dg.asset(
    name=ASSET_NAME,
    group_name=GROUP,
    deps=[vector_index, lexical_index],
    kinds={"python", "heroku"},
    pool="rerank",
    retry_policy=STEP_RETRY_POLICY,
    description=(
        "Page-level nDCG@10, MRR@10 and Recall@50 of the labelled questions (PIPELINE_LABELLED_QUERIES) at each "
        "stage: BM25 alone, dense alone, hybrid retrieval, after rerank (the rerank endpoint, through the durable "
        "cache: a re-run bills nothing) and the final context-set order. Means are float metadata, so the asset's "
        "plots show them over time; rankings and per-question figures go to retrieval_evaluation.json."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            NOT_BELOW_DENSE,
            asset=ASSET_NAME,
            description="The final context-set order scores at least dense-only retrieval's nDCG@10 (issue 8).",
        )
    ],
)
def retrieval_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluateConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
    rerank: RerankResource,
) -> dg.MaterializeResult:
    try:
        labels = load_labelled_set(files.labelled_queries_path)
    except LabelFileError as error:
        # The previous evaluation file stays: a broken labels file must not erase it.
        raise dg.Failure(f"{error} (PIPELINE_LABELLED_QUERIES)", allow_retries=False) from None
    store = state_store.get()
    model = embedder.get()
    indexes = synced_indexes(context, store, files, chroma, model)
    plan = RankingPlan(
        top_k=config.top_k,
        fusion=config.fusion(),
        token_budget=config.token_budget,
        max_passages_per_page=config.max_passages_per_page,
    )
    try:
        report = evaluate_pipeline(
            labels,
            store,
            indexes.vectors,
            indexes.lexical,
            model,
            rerank.get(),
            plan,
            cache=StoreRerankCache(store),
            max_workers=config.max_workers,
        )
    except RerankSettingRejected as error:
        # Evaluation sends no top_n, so the shared setting rejected is the number of candidates.
        raise dg.Failure(
            description=f"{error}. To fix: lower the run config retrieval_evaluation.top_k.", allow_retries=False
        ) from None
    except RerankConfigurationError as error:
        # Bad key or model: a retry would fail the same way; the message says which setting to fix.
        raise dg.Failure(description=str(error), allow_retries=False) from None
    for query_id, reason in report.not_reranked.items():
        context.log.warning(f"labelled question {query_id} not reranked (kept its hybrid order): {reason}")
    path = files.write_output(OUTPUT_FILE, json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    gains = report.gains()
    final, dense = (report.results[name].mean[GAIN_METRIC] for name in ("context_sets", "dense"))
    return dg.MaterializeResult(
        metadata={
            **{f"{metric}/{name}": report.results[name].mean[metric] for name in RANKINGS for metric in METRICS},
            **{f"{GAIN_METRIC} gain/{name}": gains[name] for name, _, _ in GAINS},
            "labelled_queries": files.labelled_queries_path,
            "corpus": labels.corpus,
            "queries": len(labels.queries),
            "queries_not_reranked": len(report.not_reranked),
            "model": report.model,
            "embedding_model": report.embedding_model,
            "billed_search_units": report.rerank_stats.search_units,
            "rerank_cache_hits": report.rerank_stats.cache_hits,
            "rerank_requests": report.rerank_stats.calls,
            "path": dg.MetadataValue.path(str(path)),
            "table": dg.MetadataValue.md(report.markdown()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=NOT_BELOW_DENSE,
                passed=final >= dense,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"ndcg@10/context_sets": final, "ndcg@10/dense": dense},
                description=None
                if final >= dense
                else "the context sets rank relevant pages worse than dense retrieval alone: check the reranker",
            )
        ],
    )
