"""The rerank asset: each query's candidates ordered by the Heroku Inference /v1/rerank endpoint, and its check."""

import dagster as dg
from pydantic import Field

from pipeline import settings
from pipeline.defs.check_results import must_act_result
from pipeline.defs.inference_resources import RerankResource
from pipeline.defs.policies import AFTER_UPSTREAM_SETTLES, STEP_RETRY_POLICY
from pipeline.defs.resources import StateStoreResource
from pipeline.defs.retrieve import retrieved_candidates
from pipeline.ranking import failed_rankings, rerank_stored_candidates
from pipeline.rerank.errors import RerankConfigurationError, RerankSettingRejected
from pipeline.tables import markdown_table

GROUP = "rerank"
# What to change when the endpoint rejects a setting every request shares (RerankSettingRejected.setting).
SETTING_FIXES = {
    "top_n": "lower the run config reranked_candidates.top_n, or unset it to keep every candidate",
    "documents_per_request": "lower the run config retrieved_candidates.top_k (the candidates sent per query)",
}


def _milliseconds(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


class RerankConfig(dg.Config):
    top_n: int | None = Field(default=None, ge=1, description="Keep the n best per query; unset keeps every candidate.")
    max_workers: int = Field(
        default=8, ge=1, le=64, description="Queries reranked in parallel (within the rate limit)."
    )


@dg.asset(
    group_name=GROUP,
    deps=[retrieved_candidates],
    kinds={"heroku"},
    pool="rerank",
    retry_policy=STEP_RETRY_POLICY,
    automation_condition=AFTER_UPSTREAM_SETTLES,
    description=(
        "Candidates reranked per query by POST {RERANK_URL}/v1/rerank (model RERANK_MODEL_ID). Results are cached "
        "by endpoint, model, query, documents and top_n, so unchanged queries bill no search units on re-runs. "
        "A query that still fails after retries keeps its retrieval order (the check every_query_reranked turns "
        "red); a rejected key, model or shared setting fails the asset and keeps the previous rankings, which "
        "context sets follow only while each query's candidates are the ones they ranked."
    ),
)
def reranked_candidates(
    context: dg.AssetExecutionContext,
    config: RerankConfig,
    state_store: StateStoreResource,
    rerank: RerankResource,
) -> dg.MaterializeResult:
    try:
        report = rerank_stored_candidates(
            state_store.get(), rerank.get(), top_n=config.top_n, max_workers=config.max_workers
        )
    except RerankSettingRejected as error:
        fix = SETTING_FIXES[error.setting]
        raise dg.Failure(description=f"{error}. To fix: {fix}.", allow_retries=False) from None
    except RerankConfigurationError as error:
        # Bad key or model: every query would fail the same way, retried or not; the message says which setting to fix.
        raise dg.Failure(description=str(error), allow_retries=False) from None
    for outcome in report.failed:
        # The detail (redacted) goes to the log only; published output carries the error's code.
        context.log.warning(f"query {outcome.query_id} not reranked ({outcome.error}): {outcome.detail}")
    stats = report.stats
    per_query = markdown_table(
        ["query", "search units", "cached", "api version", "error"],
        [
            (
                o.query_id,
                o.response.search_units if o.response else 0,
                "yes" if o.cached else "no",
                o.response.api_version if o.response else "-",
                o.error or "",
            )
            for o in report.outcomes
        ],
    )
    return dg.MaterializeResult(
        metadata={
            "model": rerank.model_id,
            "queries": len(report.outcomes),
            "queries_reranked": len(report.outcomes) - len(report.failed),
            "queries_failed": len(report.failed),
            "billed_search_units": stats.search_units,
            "api_version": ", ".join(report.api_versions),
            "requests": stats.calls,
            "cache_hits": stats.cache_hits,
            "retries": stats.retries,
            "rate_limited_429s": stats.rate_limited,
            # Null, not 0, when nothing was sent: a cache hit is no measurement of the endpoint.
            "latency_samples": stats.latency_samples,
            "latency_p50_ms": _milliseconds(stats.latency_p50_seconds),
            "latency_p95_ms": _milliseconds(stats.latency_p95_seconds),
            "per_query": dg.MetadataValue.md(per_query),
        }
    )


@dg.asset_check(
    asset=reranked_candidates,
    description=(
        "Every query with candidates was reranked. Red (ERROR) when a query still failed after retries; its "
        "context set then keeps the retrieval order and says so. Re-materialising reranked_candidates sends only "
        "the failed queries: the others come from the rerank cache."
    ),
)
def every_query_reranked(state_store: StateStoreResource) -> dg.AssetCheckResult:
    failures = failed_rankings(state_store.get())
    return must_act_result(
        not failures,
        {
            "queries_failed": len(failures),
            "failed_query_ids": ", ".join(failures),
            "failures": markdown_table(["query", "reason"], failures.items()),
        },
        problem=f"{len(failures)} quer{'y' if len(failures) == 1 else 'ies'} not reranked: "
        "re-materialise reranked_candidates to retry them",
    )


RERANK_UNITS_BUDGET = settings.integer("PIPELINE_RERANK_UNITS_BUDGET", minimum=0)


@dg.asset_check(
    asset=reranked_candidates,
    description=(
        f"The run billed at most {RERANK_UNITS_BUDGET:,} rerank search units (PIPELINE_RERANK_UNITS_BUDGET; one unit "
        "per query and 100 documents). Unchanged queries come from the cache and bill nothing, so going over means "
        "many queries or candidates changed, or the cache is not being hit."
    ),
)
def billed_units_within_budget(state_store: StateStoreResource) -> dg.AssetCheckResult:
    billed = state_store.get().rankings.billed_search_units()
    return must_act_result(
        billed <= RERANK_UNITS_BUDGET,
        {"billed_search_units": billed, "budget": RERANK_UNITS_BUDGET},
        problem=f"billed {billed:,} search units, over the budget of {RERANK_UNITS_BUDGET:,}",
    )
