"""The published output: one ranked context set per query, packed into a token budget."""

import json

import dagster as dg
from pydantic import Field

from pipeline.check_reports import context_set_coverage, rerank_account
from pipeline.context_sets import markdown_preview
from pipeline.defs.check_results import must_act_result
from pipeline.defs.policies import AFTER_UPSTREAM_SETTLES, STEP_RETRY_POLICY
from pipeline.defs.rerank import reranked_candidates
from pipeline.defs.resources import PipelineFilesResource, StateStoreResource
from pipeline.ranking import assemble_context_sets
from pipeline.store.schema import CONTEXT_SETS_TABLE, LATEST_CONTEXT_SETS_VIEW

GROUP = "context"
OUTPUT_FILE = "ranked_context_sets.jsonl"


class ContextConfig(dg.Config):
    token_budget: int = Field(default=3000, ge=1, description="cl100k tokens of passage text per context set.")
    max_passages_per_page: int | None = Field(
        default=2,
        ge=1,
        description=(
            "Passages of one page allowed before every other candidate page had its turn; the rest move behind "
            "and still fill leftover budget. Unset keeps the rerank order."
        ),
    )
    keep_runs: int = Field(
        default=30,
        ge=1,
        description="Runs whose context sets stay in the pipeline_context_sets table; older runs are deleted.",
    )


@dg.asset(
    group_name=GROUP,
    deps=[reranked_candidates],
    kinds={"json"},
    retry_policy=STEP_RETRY_POLICY,
    automation_condition=AFTER_UPSTREAM_SETTLES,
    description=(
        "Per query, the reranked passages that fit the token budget (at most max_passages_per_page of one page ahead "
        "of other pages), each with rank, chunk ID, url, title, heading path, text, tokens, retrieval rank and "
        "score, and rerank score; each set names the embedding model of the retrieval that found its passages. "
        "Written to ranked_context_sets.jsonl in the data directory and to the pipeline_context_sets table (keyed "
        "by run and query; the newest keep_runs runs are kept); the view pipeline_latest_context_sets holds the "
        "newest run's sets."
    ),
)
def ranked_context_sets(
    context: dg.AssetExecutionContext,
    config: ContextConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
) -> dg.MaterializeResult:
    store = state_store.get()
    context_sets = assemble_context_sets(store, config.token_budget, config.max_passages_per_page)
    path = files.write_output(
        OUTPUT_FILE,
        "".join(json.dumps(context_set.published(), ensure_ascii=False) + "\n" for context_set in context_sets),
    )
    runs_deleted = store.context_sets.save(context.run_id, context_sets, keep_runs=config.keep_runs)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(context_sets),
            "path": dg.MetadataValue.path(str(path)),
            "table": f"{CONTEXT_SETS_TABLE} (newest run: {LATEST_CONTEXT_SETS_VIEW})",
            "runs_kept": len(store.context_sets.runs()),
            "runs_deleted": runs_deleted,
            "reranked_sets": sum(1 for context_set in context_sets if context_set.reranked),
            # Which embedding model's retrieval found the passages (BM25 alone: none).
            "embedding_model": ", ".join(
                sorted({context_set.embedding_model or "none" for context_set in context_sets})
            ),
            "passages": sum(len(context_set.passages) for context_set in context_sets),
            "preview": dg.MetadataValue.md(markdown_preview(context_sets)),
        }
    )


@dg.asset_check(
    asset=ranked_context_sets,
    description=(
        "Every stored query has a context set with at least one passage. A query without one gets no answer: "
        "its topic is not covered by any source, or retrieval found nothing."
    ),
)
def every_query_has_a_context_set(state_store: StateStoreResource) -> dg.AssetCheckResult:
    store = state_store.get()
    coverage = context_set_coverage([query.query_id for query in store.rankings.queries()], store.context_sets.latest())
    return must_act_result(
        coverage.complete,
        coverage.metadata(),
        problem="queries without passages: add a source that covers them, or check retrieved_candidates",
    )


@dg.asset_check(
    asset=ranked_context_sets,
    description=(
        "Every context set is reranked (model named, every passage scored) or says why not in "
        "reason_not_reranked, so a retrieval-only order is never passed off as reranked."
    ),
)
def context_sets_reranked_or_explained(state_store: StateStoreResource) -> dg.AssetCheckResult:
    store = state_store.get()
    latest = store.context_sets.latest()
    account = rerank_account([latest[q.query_id] for q in store.rankings.queries() if q.query_id in latest])
    return must_act_result(
        not account.unexplained,
        account.metadata(),
        problem="context sets whose rerank status is inconsistent: see problems",
    )
