"""Jobs over the asset graph: refresh one source's index, and rebuild the context sets from the index."""

import dagster as dg

from pipeline.defs.partitions import source_partitions

ingest_source_job = dg.define_asset_job(
    "ingest_source",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=source_partitions,
    description="Crawl one documentation source and bring its chunks and vectors up to date.",
)

context_sets_job = dg.define_asset_job(
    "build_context_sets",
    selection=dg.AssetSelection.groups("retrieve", "rerank", "context"),
    description="Retrieve, rerank and pack context sets for every query from the current index.",
)
