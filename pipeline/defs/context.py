"""The published output: one ranked context set per query, packed into a token budget."""


import json

import dagster as dg
from pydantic import Field

from pipeline.context import markdown_preview
from pipeline.defs.rerank import reranked_candidates
from pipeline.defs.resources import PipelineFilesResource, StateStoreResource
from pipeline.ranking import assemble_context_sets

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


@dg.asset(
    group_name=GROUP,
    deps=[reranked_candidates],
    kinds={"json"},
    description=(
        "Per query, the reranked passages that fit the token budget (at most max_passages_per_page of one page ahead "
        "of other pages), each with rank, chunk ID, url, title, heading "
        "path, text, tokens, retrieval rank and score, and rerank score. Written to ranked_context_sets.jsonl in the "
        "data directory and to the pipeline_context_sets table (keyed by run and query)."
    ),
)
def ranked_context_sets(
    context: dg.AssetExecutionContext,
    config: ContextConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
) -> dg.MaterializeResult:
    store = state_store.open()
    context_sets = assemble_context_sets(store, config.token_budget, config.max_passages_per_page)
    path = files.write_output(
        OUTPUT_FILE, "".join(json.dumps(context_set, ensure_ascii=False) + "\n" for context_set in context_sets)
    )
    store.save_context_sets(context.run_id, context_sets)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(context_sets),
            "path": dg.MetadataValue.path(str(path)),
            "reranked_sets": sum(1 for context_set in context_sets if context_set["reranked"]),
            "passages": sum(len(context_set["passages"]) for context_set in context_sets),
            "preview": dg.MetadataValue.md(markdown_preview(context_sets)),
        }
    )
