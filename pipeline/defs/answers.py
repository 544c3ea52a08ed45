"""The answers asset: each published context set answered, with citations, by the chat model; and its checks."""

import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline import settings
from pipeline.answer.answering import StoreAnswerCache, answer_context_sets
from pipeline.answer.reports import citation_account, markdown_preview, publication_account
from pipeline.credentials import Redactor
from pipeline.defs.check_results import must_act_result, ui_metadata
from pipeline.defs.context_sets import ranked_context_sets
from pipeline.defs.inference_resources import ChatResource
from pipeline.defs.policies import AFTER_UPSTREAM_SETTLES, STEP_RETRY_POLICY
from pipeline.defs.resources import PipelineFilesResource, StateStoreResource
from pipeline.inference import InferenceConfigurationError
from pipeline.store.records import Answer
from pipeline.store.schema import ANSWERS_TABLE, LATEST_ANSWERS_VIEW

GROUP = "answer"
OUTPUT_FILE = "answers.jsonl"


def _milliseconds(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _write_answers(files: PipelineFilesResource, published: Sequence[Answer]) -> Path:
    return files.write_output(
        OUTPUT_FILE, "".join(json.dumps(answer.published(), ensure_ascii=False) + "\n" for answer in published)
    )


class AnswersConfig(dg.Config):
    max_workers: int = Field(default=4, ge=1, le=32, description="Questions answered in parallel (within the limits).")
    keep_runs: int = Field(
        default=30, ge=1, description="Runs whose answers stay in the pipeline_answers table; older runs are deleted."
    )


@dg.asset(
    group_name=GROUP,
    deps=[ranked_context_sets],
    kinds={"heroku"},
    pool="chat",
    retry_policy=STEP_RETRY_POLICY,
    automation_condition=AFTER_UPSTREAM_SETTLES,
    description=(
        "Per published context set, an answer written only from its passages, every claim cited [n], or "
        "'NOT IN THE DOCS: ...' when they do not hold it: by POST {INFERENCE_URL}/v1/chat/completions (model "
        "INFERENCE_MODEL_ID), or by the local extractive answerer when INFERENCE_* are unset. Each answer has "
        "its citations resolved to chunk ID and URL, answered, model, prompt version, tokens and the content hash "
        "of its context set. Completions are cached by chat model, prompt version, generation settings and "
        "context-set content, so an unchanged refresh spends no tokens; a question whose completion still fails "
        "after retries is recorded as failed, with no text in its place; a rejected key or model fails the asset and "
        "keeps the previous answers, less those whose context set changed since. Written to answers.jsonl in the data "
        "directory and to the pipeline_answers table (the newest keep_runs runs are kept); the view "
        "pipeline_latest_answers holds the newest run's answers whose context set is still the one published."
    ),
)
def answers(
    context: dg.AssetExecutionContext,
    config: AnswersConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chat: ChatResource,
) -> dg.MaterializeResult:
    store = state_store.get()
    chat_model = chat.get()
    try:
        report = answer_context_sets(
            list(store.context_sets.latest().values()),
            chat_model,
            chat.generation_settings(),
            cache=StoreAnswerCache(store),
            redact=Redactor(*settings.secret_values()),
            max_workers=config.max_workers,
        )
    except InferenceConfigurationError as error:
        # Bad key or model: every question would fail the same way. The previous answers stay published,
        # but the file, like the view, drops those whose context set has changed since.
        _write_answers(files, list(store.answers.latest().values()))
        raise dg.Failure(description=str(error), allow_retries=False) from None
    for outcome in report.failed:
        # The detail (redacted) goes to the log only; published output carries the error's code.
        context.log.warning(f"query {outcome.answer.query_id} not answered ({outcome.answer.error}): {outcome.detail}")
    path = _write_answers(files, report.answers)
    runs_deleted = store.answers.save(context.run_id, report.answers, keep_runs=config.keep_runs)
    stats = report.stats
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.queries,
            "path": dg.MetadataValue.path(str(path)),
            "table": f"{ANSWERS_TABLE} (published: {LATEST_ANSWERS_VIEW})",
            "runs_deleted": runs_deleted,
            "model": chat_model.model,
            "answered": stats.answered,
            "not_answered": stats.not_answered,
            "failed": stats.failed,
            "completions_requested": stats.calls,
            "cache_hits": stats.cache_hits,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "tokens_spent": stats.tokens,
            # Null, not 0, when nothing was requested: a cache hit is no measurement of the model.
            "latency_samples": stats.latency_samples,
            "latency_p50_ms": _milliseconds(stats.latency_p50_seconds),
            "latency_p95_ms": _milliseconds(stats.latency_p95_seconds),
            "preview": dg.MetadataValue.md(markdown_preview(report.answers)),
        }
    )


@dg.asset_check(
    asset=answers,
    description=(
        "Every answered question cites at least one passage of its own context set, and every [n] in it names one "
        "of that set's passages. Abstentions ('NOT IN THE DOCS: ...') and failed questions are counted apart."
    ),
)
def answers_cite_their_own_passages(state_store: StateStoreResource) -> dg.AssetCheckResult:
    store = state_store.get()
    account = citation_account(store.answers.latest(), store.context_sets.latest())
    return must_act_result(
        account.sound,
        account.metadata(),
        problem="answers whose citations do not resolve to their own context set: see problems",
    )


@dg.asset_check(
    asset=answers,
    description=(
        "An answer is published only beside the context set it was computed from (same content hash), like "
        "rerank scores beside their candidates; red when a published answer's context set differs, or when a "
        "newer context set has no answer of its content yet (re-materialise answers: unchanged sets come from the "
        "cache)."
    ),
)
def answers_match_their_context_sets(state_store: StateStoreResource) -> dg.AssetCheckResult:
    store = state_store.get()
    account = publication_account(store.answers.latest(), store.answers.newest_run(), store.context_sets.latest())
    return must_act_result(
        account.current,
        account.metadata(),
        problem="answers out of step with the published context sets: see problems",
    )


ANSWER_TOKENS_BUDGET = settings.integer("PIPELINE_ANSWER_TOKENS_BUDGET", minimum=0)


@dg.asset_check(
    asset=answers,
    description=(
        f"The newest answers run spent at most {ANSWER_TOKENS_BUDGET:,} chat tokens, prompt and completion "
        "(PIPELINE_ANSWER_TOKENS_BUDGET). Cached answers spend none, so going over means many context sets "
        "changed, or the cache is not being hit."
    ),
)
def answer_tokens_within_budget(state_store: StateStoreResource) -> dg.AssetCheckResult:
    spent = sum(answer.tokens_spent for answer in state_store.get().answers.newest_run().values())
    return dg.AssetCheckResult(
        passed=spent <= ANSWER_TOKENS_BUDGET,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=ui_metadata({"tokens_spent": spent, "budget": ANSWER_TOKENS_BUDGET}),
        description=None
        if spent <= ANSWER_TOKENS_BUDGET
        else f"spent {spent:,} tokens, over the budget of {ANSWER_TOKENS_BUDGET:,}",
    )
