"""The one Dagster ``Definitions`` of the pipeline (loaded by workspace.yaml, ``dagster dev`` and ``dg``)."""

import dagster as dg

from pipeline.defs import answers, automation, context_sets, evaluation, ingest, removal, rerank, retrieve
from pipeline.defs.jobs import context_sets_job, evaluation_job, ingest_source_job
from pipeline.defs.removal import remove_sources_job
from pipeline.defs.resources import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, retrieve, rerank, context_sets, answers, evaluation]),
    asset_checks=dg.load_asset_checks_from_modules(
        [ingest, removal, retrieve, rerank, context_sets, answers, evaluation]
    ),
    jobs=[
        ingest_source_job,
        context_sets_job,
        evaluation_job,
        remove_sources_job,
        automation.check_sources_job,
    ],
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=build_resources(),
    # Steps run one after another in the run's own process: a subprocess per step would load
    # Dagster and the embedding model again for each, on a worker dyno with 1 GB in all.
    executor=dg.in_process_executor,
)
