"""Jobs over the asset graph: refresh one source's index, rebuild the context sets and their answers, evaluate
retrieval and answer quality.

Runs carry the ``pipeline/writes`` tag of :mod:`pipeline.run_tags`.
"""

import dagster as dg

from pipeline.defs.partitions import source_partitions
from pipeline.run_tags import WRITES_CONTEXT_SETS, WRITES_INDEX

ingest_source_job = dg.define_asset_job(
    "ingest_source",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=source_partitions,
    description="Crawl one documentation source and bring its chunks and vectors up to date.",
    run_tags=WRITES_INDEX,
)

context_sets_job = dg.define_asset_job(
    "build_context_sets",
    selection=dg.AssetSelection.groups("retrieve", "rerank", "context", "answer"),
    description="Retrieve, rerank and pack context sets for every query from the current index, and answer them.",
    run_tags=WRITES_CONTEXT_SETS,
)

evaluation_job = dg.define_asset_job(
    "evaluate_retrieval",
    selection=dg.AssetSelection.groups("evaluate"),
    description="Measure every ranking stage and the cited answers on the labelled questions "
    "(PIPELINE_LABELLED_QUERIES), and abstention on questions the docs do not answer (PIPELINE_UNANSWERABLE_QUERIES).",
)
