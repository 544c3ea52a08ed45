"""The evaluation assets: retrieval quality of every ranking stage, and the quality of the cited answers, on a
labelled query set, plotted over time."""

import json
from typing import Any

import dagster as dg
from pydantic import Field

from pipeline import settings
from pipeline.answer.reports import markdown_preview
from pipeline.ask import Asker
from pipeline.credentials import Redactor
from pipeline.defs.context_sets import ContextConfig
from pipeline.defs.inference_resources import ChatResource, EmbedderResource, RerankResource
from pipeline.defs.ingest import lexical_index, vector_index
from pipeline.defs.policies import STEP_RETRY_POLICY
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.defs.retrieve import CandidatesConfig, synced_indexes
from pipeline.evaluation.answer_run import load_unanswerable_set, run_answer_evaluation
from pipeline.evaluation.labels import LabelFileError, LabelledSet, load_labelled_set
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.pipeline import GAIN_METRIC, GAINS, RANKINGS, evaluate_pipeline
from pipeline.inference import InferenceConfigurationError
from pipeline.ranking import RankingPlan, StoreRerankCache
from pipeline.rerank.client import RerankConfigurationError, RerankSettingRejected

GROUP = "evaluate"
OUTPUT_FILE = "retrieval_evaluation.json"
ASSET_NAME = "retrieval_evaluation"
ANSWERS_OUTPUT_FILE = "answer_evaluation.json"
NOT_BELOW_DENSE = "context_sets_not_below_dense_retrieval"


class EvaluateConfig(CandidatesConfig, ContextConfig):
    """Retrieval and packing knobs (defaults: those of retrieved_candidates and ranked_context_sets)."""

    max_workers: int = Field(
        default=8, ge=1, le=64, description="Questions reranked in parallel (within the rate limit)."
    )

    def plan(self) -> RankingPlan:
        return RankingPlan(
            top_k=self.top_k,
            fusion=self.fusion(),
            token_budget=self.token_budget,
            max_passages_per_page=self.max_passages_per_page,
        )


def _labelled_set(files: PipelineFilesResource) -> LabelledSet:
    try:
        return load_labelled_set(files.labelled_queries_path)
    except LabelFileError as error:
        # The previous evaluation file stays: a broken labels file must not erase it.
        raise dg.Failure(f"{error} (PIPELINE_LABELLED_QUERIES)", allow_retries=False) from None


# Both evaluation assets read the indexes and call the paid endpoints (rerank; answers also chat).
EVALUATION_ASSET: dict[str, Any] = {
    "group_name": GROUP,
    "deps": [vector_index, lexical_index],
    "kinds": {"python", "heroku"},
    "retry_policy": STEP_RETRY_POLICY,
}


@dg.asset(
    name=ASSET_NAME,
    pool="rerank",
    **EVALUATION_ASSET,
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
    labels = _labelled_set(files)
    store = state_store.get()
    model = embedder.get()
    indexes = synced_indexes(context, store, files, chroma, model)
    plan = config.plan()
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


@dg.asset(
    pool="chat",
    **EVALUATION_ASSET,
    description=(
        "Cited answers to the labelled questions (PIPELINE_LABELLED_QUERIES) and to questions their docs do not "
        "answer (PIPELINE_UNANSWERABLE_QUERIES), each asked as `pipeline ask` asks it: retrieve, rerank, pack and "
        "answer through the chat resource (the local extractive answerer unless a chat model is attached --as "
        "INFERENCE), through the rerank and answer caches, so a re-run on an unchanged index bills nothing; nothing "
        "is published. Measures citation precision (the share of cited pages labelled grade 1 or more), answered "
        "from relevant (the share of labelled questions whose answer cites a grade-2 page) and the abstention rate "
        "on the unanswerable questions, as float metadata plotted over time; per-question judgements and every "
        "answer go to answer_evaluation.json."
    ),
)
def answer_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluateConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
    rerank: RerankResource,
    chat: ChatResource,
) -> dg.MaterializeResult:
    labels = _labelled_set(files)
    try:
        unanswerable = load_unanswerable_set(files.unanswerable_queries_path, labels)
    except LabelFileError as error:
        raise dg.Failure(f"{error} (PIPELINE_UNANSWERABLE_QUERIES)", allow_retries=False) from None
    store = state_store.get()
    model = embedder.get()
    asker = Asker(
        store=store,
        indexes=synced_indexes(context, store, files, chroma, model),
        embedder=model,
        client=rerank.get(),
        chat=chat.get(),
        generation=chat.generation_settings(),
        redact=Redactor(*settings.secret_values()),
        plan=config.plan(),
    )
    try:
        run = run_answer_evaluation(labels, unanswerable, asker, max_workers=config.max_workers)
    except InferenceConfigurationError as error:
        # A rejected key or model (rerank or chat): a retry would fail the same way; the message names the setting.
        raise dg.Failure(description=str(error), allow_retries=False) from None
    for not_reranked in run.rerank.failed:
        context.log.warning(
            f"question {not_reranked.query_id} not reranked (kept its hybrid order): {not_reranked.error}"
        )
    for failed in run.answers.failed:
        context.log.warning(f"question {failed.answer.query_id} not answered ({failed.answer.error}): {failed.detail}")
    path = files.write_output(ANSWERS_OUTPUT_FILE, json.dumps(run.to_json(), ensure_ascii=False, indent=1))
    stats = run.answers.stats
    return dg.MaterializeResult(
        metadata={
            # Null, not 0, when no question could be judged (every answer failed).
            **run.evaluation.rates(),
            **run.evaluation.counts(),
            "labelled_queries": files.labelled_queries_path,
            "unanswerable_queries": files.unanswerable_queries_path,
            "corpus": labels.corpus,
            "chat_model": run.chat_model,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "answer_cache_hits": stats.cache_hits,
            "billed_search_units": run.rerank.stats.search_units,
            "rerank_cache_hits": run.rerank.stats.cache_hits,
            "path": dg.MetadataValue.path(str(path)),
            "table": dg.MetadataValue.md(run.evaluation.markdown()),
            "preview": dg.MetadataValue.md(markdown_preview(run.answers.answers)),
        }
    )
