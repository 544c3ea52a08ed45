"""Sources dropped from the sources file: orphaned for a grace period, then purged.

The ``source_partitions_sensor`` orphans a dropped source and launches ``remove_sources`` once
its grace period (PIPELINE_SOURCE_REMOVAL_GRACE_HOURS) ended; a person may launch it earlier,
naming the sources in its run config. ``no_orphaned_sources`` lists what waits meanwhile.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from pipeline import settings
from pipeline.check_reports import orphaned_sources
from pipeline.crawl.sources import load_sources
from pipeline.defs.check_results import ui_metadata
from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.ingest import lexical_index
from pipeline.defs.partitions import SOURCE_PARTITIONS
from pipeline.defs.policies import STEP_RETRY_POLICY
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.run_tags import WRITES_INDEX
from pipeline.source_sync import remove_sources
from pipeline.tables import markdown_table

REMOVAL_GRACE = timedelta(hours=settings.number("PIPELINE_SOURCE_REMOVAL_GRACE_HOURS", minimum=0))


class PurgeConfig(dg.Config):
    sources: list[str] = Field(
        description=(
            "Sources whose pages, documents, chunks and index entries are deleted now, orphaned or not "
            "(pages another source took over stay with it)."
        )
    )


@dg.op(
    pool="chroma",
    retry_policy=STEP_RETRY_POLICY,
    out=dg.Out(dg.Nothing),
    description=(
        "Deletes the given sources' pages, documents and chunks from the state store, their vectors from Chroma, "
        "and rebuilds the lexical index without them; pages another source took over stay with it. A source that "
        "is back in the sources file, or registered again, is kept; an unreadable sources file fails the step "
        "before anything is deleted."
    ),
)
def purge_removed_sources(
    context: dg.OpExecutionContext,
    config: PurgeConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
    embedder: EmbedderResource,
) -> dg.Output:
    # Read again at run time: the file may have changed since the sensor saw the source go.
    listed = {source.name for source in load_sources(files.sources_path)}
    registered = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS))
    kept = sorted(set(config.sources) & (listed | registered))
    if kept:
        context.log.warning(f"not removing {', '.join(kept)}: listed in the sources file again")
    doomed = [source for source in config.sources if source not in kept]
    # The configured model's collection; another model's is synced when it is configured again.
    vectors = chroma.get(embedder.get())
    removals, lexical = remove_sources(state_store.get(), vectors, files.lexical_index(), doomed)
    for removal in removals:
        context.log.info(
            f"removed source {removal.source}: {removal.pages} pages, {removal.documents} documents, "
            f"{removal.chunks} chunks, {removal.vectors} vectors"
        )
    return dg.Output(
        None,
        metadata={
            "sources_removed": len(removals),
            "sources_kept": ", ".join(kept) or "none",
            "chunks_deleted": sum(removal.chunks for removal in removals),
            "lexical_index_rebuilt": lexical.rebuilt,
            "removed": dg.MetadataValue.md(
                markdown_table(
                    ["source", "pages", "documents", "chunks", "vectors"],
                    [(r.source, r.pages, r.documents, r.chunks, r.vectors) for r in removals],
                )
            ),
        },
    )


@dg.job(
    name="remove_sources",
    description=(
        "Purge sources removed from the sources file, so their passages are no longer retrieved. The sensor "
        "launches it when an orphaned source's grace period ended; launch it naming a source to purge it now."
    ),
    run_tags=WRITES_INDEX,
)
def remove_sources_job() -> None:
    purge_removed_sources()


@dg.asset_check(
    asset=lexical_index,
    description=(
        "Warns while a source dropped from the sources file still holds pages: its passages are retrieved until "
        f"it is purged, {REMOVAL_GRACE.total_seconds() / 3600:g} hours after it was dropped "
        "(PIPELINE_SOURCE_REMOVAL_GRACE_HOURS). List it again to keep it, or launch remove_sources naming it."
    ),
)
def no_orphaned_sources(state_store: StateStoreResource) -> dg.AssetCheckResult:
    report = orphaned_sources(state_store.get(), REMOVAL_GRACE)
    waiting = ", ".join(
        f"{orphan.source} ({orphan.pages} pages, purged after {orphan.purged_after:%Y-%m-%d %H:%M} UTC)"
        for orphan in report.holding_data
    )
    return dg.AssetCheckResult(
        passed=not report.holding_data,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=ui_metadata(report.metadata()),
        description=(
            f"no longer in the sources file: {waiting}. List a source again to keep it (nothing is refetched "
            "or re-embedded), rename it (the new name takes its pages over), or launch remove_sources naming it"
        )
        if report.holding_data
        else None,
    )
