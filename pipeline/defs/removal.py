"""Forgetting sources dropped from the sources file (launched by the ``source_partitions_sensor``)."""

import dagster as dg
from pydantic import Field

from pipeline.crawl.sources import load_sources
from pipeline.defs.jobs import WRITES_INDEX
from pipeline.defs.partitions import source_partitions
from pipeline.defs.policies import STEP_RETRY_POLICY
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.source_sync import remove_sources


class PurgeConfig(dg.Config):
    sources: list[str] = Field(description="Sources whose pages, documents, chunks and index entries are deleted.")


@dg.op(
    pool="chroma",
    retry_policy=STEP_RETRY_POLICY,
    out=dg.Out(dg.Nothing),
    description=(
        "Deletes the given sources' pages, documents and chunks from the state store, their vectors from Chroma, "
        "and rebuilds the lexical index without them. A source that is back in the sources file, or registered "
        "again, is kept; an unreadable sources file fails the step before anything is deleted."
    ),
)
def purge_removed_sources(
    context: dg.OpExecutionContext,
    config: PurgeConfig,
    files: PipelineFilesResource,
    state_store: StateStoreResource,
    chroma: ChromaResource,
) -> dg.Output:
    # Read again at run time: the file may have changed since the sensor saw the source go.
    listed = {source.name for source in load_sources(files.sources_path)}
    registered = set(context.instance.get_dynamic_partitions(source_partitions.name))
    kept = sorted(set(config.sources) & (listed | registered))
    if kept:
        context.log.warning(f"not removing {', '.join(kept)}: listed in the sources file again")
    doomed = [source for source in config.sources if source not in kept]
    removals, lexical = remove_sources(state_store.open(), chroma.open(), files.lexical_index(), doomed)
    for removal in removals:
        context.log.info(
            f"removed source {removal.source}: {removal.pages} pages, {removal.documents} documents, "
            f"{removal.chunks} chunks, {removal.vectors} vectors"
        )
    rows = "\n".join(f"| {r.source} | {r.pages} | {r.documents} | {r.chunks} | {r.vectors} |" for r in removals)
    return dg.Output(
        None,
        metadata={
            "sources_removed": len(removals),
            "sources_kept": ", ".join(kept) or "none",
            "chunks_deleted": sum(removal.chunks for removal in removals),
            "lexical_index_rebuilt": lexical.rebuilt,
            "removed": dg.MetadataValue.md(
                "| source | pages | documents | chunks | vectors |\n|---|---|---|---|---|\n" + rows if rows else "none"
            ),
        },
    )


@dg.job(
    name="remove_sources",
    description="Forget sources removed from the sources file, so their passages are no longer retrieved.",
    run_tags=WRITES_INDEX,
)
def remove_sources_job() -> None:
    purge_removed_sources()
