"""Automation: the daily knowledge-base refresh and the sensors that follow the sources and queries files.

- ``knowledge_base_refresh`` (schedule, PIPELINE_REFRESH_CRON in PIPELINE_REFRESH_TIMEZONE) queues one
  ``ingest_source`` run per registered source at each tick.
- ``context_sets_automation`` evaluates the ``AFTER_UPSTREAM_SETTLES`` condition of retrieval, rerank and
  context: once the last of those source runs finished, it launches them once. It also reads the queries
  once on a fresh deployment (``ONCE_WHEN_MISSING``).
- ``source_partitions_sensor`` keeps the source partitions equal to the sources file: a new source is
  registered and ingested at once; a removed one is unregistered and orphaned, its data kept for
  PIPELINE_SOURCE_REMOVAL_GRACE_HOURS and then purged (``remove_sources``) unless it is listed again.
- ``queries_file_sensor`` launches ``build_context_sets`` when the queries change (no recrawl), once
  something has been ingested.
- ``context_sets_after_source_removal`` rebuilds the context sets once a removal finished, so passages
  of a removed source leave the published output too.
- ``source_freshness_check`` runs the ``sources_refreshed_recently`` and ``no_orphaned_sources`` checks
  every hour, so a refresh that stopped happening turns red even though nothing is materialised.

Everything is RUNNING by default, so the one dagster-daemon of a deployment ticks it without a click.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from pipeline import settings
from pipeline.crawl.sources import SourceConfigError, load_sources
from pipeline.defs.ingest import sources_refreshed_recently
from pipeline.defs.jobs import context_sets_job, ingest_source_job
from pipeline.defs.partitions import SOURCE_PARTITIONS, source_partitions
from pipeline.defs.removal import REMOVAL_GRACE, PurgeConfig, no_orphaned_sources, remove_sources_job
from pipeline.defs.resources import PipelineFilesResource, StateStoreResource
from pipeline.inputs import InputUnavailable
from pipeline.queries import QueriesFileError, load_queries, queries_digest
from pipeline.run_tags import WRITES_CONTEXT_SETS
from pipeline.settings import SettingError
from pipeline.source_sync import source_changes
from pipeline.store.orphans import mark_orphaned, orphaned_since, release_orphans

RUNNING = dg.DefaultScheduleStatus.RUNNING
SENSOR_RUNNING = dg.DefaultSensorStatus.RUNNING
# Dagster tags every run of a partition with its key.
PARTITION_TAG = "dagster/partition"
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _sources_with_active_runs(instance: dg.DagsterInstance, sources: list[str]) -> list[str]:
    """Sources that have a run queued or in progress (any job: UI materialisations count too)."""
    return [
        source
        for source in sources
        if instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={PARTITION_TAG: source}), limit=1)
    ]


check_sources_job = dg.define_asset_job(
    "check_sources",
    selection=dg.AssetSelection.checks(sources_refreshed_recently, no_orphaned_sources),
    description="Only the source checks (freshness, orphaned sources): nothing is crawled or materialised.",
)


def refresh_every_source(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
    sources = sorted(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS))
    if not sources:
        yield dg.SkipReason("no sources registered yet: the source_partitions_sensor registers PIPELINE_SOURCES")
        return
    # A source still crawling from an earlier run (or yesterday's tick) is not queued twice.
    busy = _sources_with_active_runs(context.instance, sources)
    if busy:
        context.log.info(f"not queueing {', '.join(busy)}: a run of each is still queued or in progress")
    if len(busy) == len(sources):
        yield dg.SkipReason(f"every source already has a run queued or in progress: {', '.join(busy)}")
    for source in sources:
        if source not in busy:
            yield dg.RunRequest(run_key=source, partition_key=source)


def build_refresh_schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    """The daily refresh; a bad cron or time zone fails loading with the variable to fix."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingError(
            f"PIPELINE_REFRESH_TIMEZONE must be an IANA time zone such as UTC or Europe/Berlin, got {timezone!r}"
        ) from None
    try:
        return dg.ScheduleDefinition(
            name="knowledge_base_refresh",
            cron_schedule=cron,
            execution_timezone=timezone,
            job=ingest_source_job,
            execution_fn=refresh_every_source,
            default_status=RUNNING,
            description=(
                f"Refreshes every source at {cron!r} ({timezone}; PIPELINE_REFRESH_CRON, PIPELINE_REFRESH_TIMEZONE): "
                "one ingest_source run per registered source; retrieval, rerank and context sets then run once, "
                "after the last source (context_sets_automation)."
            ),
        )
    except dg.DagsterInvalidDefinitionError:
        raise SettingError(
            f"PIPELINE_REFRESH_CRON must be a cron expression of five fields such as '0 4 * * *', got {cron!r}"
        ) from None


knowledge_base_refresh = build_refresh_schedule(
    settings.string("PIPELINE_REFRESH_CRON").strip(), settings.string("PIPELINE_REFRESH_TIMEZONE").strip()
)

context_sets_automation = dg.AutomationConditionSensorDefinition(
    "context_sets_automation",
    target=dg.AssetSelection.groups("retrieve", "rerank", "context", "answer"),
    run_tags=WRITES_CONTEXT_SETS,
    default_status=SENSOR_RUNNING,
    description=(
        "Runs retrieval, rerank, context sets and answers once after the index changed and no ingest run is queued "
        "or in progress any more (the daily refresh, a new source, a re-executed source)."
    ),
)


@dg.sensor(
    name="source_partitions_sensor",
    jobs=[ingest_source_job, remove_sources_job, check_sources_job],
    minimum_interval_seconds=60,
    default_status=SENSOR_RUNNING,
    description=(
        "Keeps the source partitions equal to the sources file (PIPELINE_SOURCES): new sources are registered and "
        "ingested; removed ones are unregistered and orphaned, keeping their data, and purged by remove_sources "
        f"{REMOVAL_GRACE.total_seconds() / 3600:g} hours later (PIPELINE_SOURCE_REMOVAL_GRACE_HOURS) unless listed "
        "again. An unreadable or invalid file, or one listing no source at all, changes nothing."
    ),
)
def source_partitions_sensor(
    context: dg.SensorEvaluationContext, files: PipelineFilesResource, state_store: StateStoreResource
) -> dg.SensorResult | dg.SkipReason:
    try:
        listed = [source.name for source in load_sources(files.sources_path)]
    except SourceConfigError as error:
        return dg.SkipReason(f"sources file unusable, partitions left unchanged: {error}")
    registered = context.instance.get_dynamic_partitions(SOURCE_PARTITIONS)
    if not listed and registered:
        return dg.SkipReason(
            f"the sources file lists no source; refusing to remove all {len(registered)} registered sources "
            "(delete them one by one from the file if that is really meant)"
        )
    store = state_store.get()
    orphaned = orphaned_since(store)
    dropped = [name for name in {*registered, *orphaned} if name not in listed]
    now = datetime.now(UTC)
    # Orphaning or purging while a run of the source still writes would leave its new chunks behind.
    changes = source_changes(
        listed,
        registered,
        orphaned,
        busy=_sources_with_active_runs(context.instance, dropped),
        now=now,
        grace=REMOVAL_GRACE,
    )
    if changes.waiting:
        context.log.info(f"orphaning {', '.join(changes.waiting)} waits for their queued or running runs")
    if changes.unchanged:
        return dg.SkipReason(f"{len(listed)} sources listed, every one registered")
    # The state store first: a partition request the daemon fails to apply is simply made again next tick.
    mark_orphaned(store, changes.orphaned, now)
    release_orphans(store, changes.returned)
    partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    run_requests = [dg.RunRequest(job_name=ingest_source_job.name, partition_key=name) for name in changes.added]
    if changes.added:
        partition_requests.append(source_partitions.build_add_request(list(changes.added)))
    if changes.orphaned:
        partition_requests.append(source_partitions.build_delete_request(list(changes.orphaned)))
    if changes.orphaned or changes.returned:
        # no_orphaned_sources shows the change now rather than at the next hourly check.
        run_requests.append(dg.RunRequest(job_name=check_sources_job.name))
    for name in changes.expired:
        run_requests.append(
            dg.RunRequest(
                job_name=remove_sources_job.name,
                # Once per orphaning: a source dropped again later is purged again later.
                run_key=f"purge:{name}:{orphaned[name].isoformat()}",
                run_config=dg.RunConfig(ops={"purge_removed_sources": PurgeConfig(sources=[name])}),
            )
        )
    if not (run_requests or partition_requests):
        return dg.SkipReason(f"orphaning {', '.join(changes.waiting)} waits for their queued or running runs")
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests)


@dg.sensor(
    name="queries_file_sensor",
    job=context_sets_job,
    minimum_interval_seconds=60,
    default_status=SENSOR_RUNNING,
    description=(
        "Launches build_context_sets (retrieval, rerank, context sets, answers; no crawl) when the queries file "
        "(PIPELINE_QUERIES) changes. The cursor is a hash of the (id, query) pairs, so reformatting changes "
        "nothing; an unreadable or invalid file launches nothing. While no chunk has been ingested it launches "
        "nothing either (there is nothing to retrieve); a change made meanwhile is launched once chunks exist."
    ),
)
def queries_file_sensor(
    context: dg.SensorEvaluationContext, files: PipelineFilesResource, state_store: StateStoreResource
) -> dg.SensorResult | dg.SkipReason:
    try:
        items = load_queries(files.queries_path)
    except (QueriesFileError, InputUnavailable) as error:
        return dg.SkipReason(f"queries file unusable, nothing launched: {error}")
    digest = queries_digest(items)
    if digest == context.cursor:
        return dg.SkipReason(f"{len(items)} queries, unchanged")
    store = state_store.get()
    if store.chunks.count() == 0:
        # The cursor stays: once chunks exist, this file is compared with the queries stored then.
        return dg.SkipReason(
            f"{len(items)} queries, but no chunks ingested yet: context sets follow the first ingest "
            "(context_sets_automation), so nothing is launched now"
        )
    if context.cursor is None and digest == queries_digest(store.rankings.queries()):
        # First evaluation (new deployment, sensor reset): the stored context sets already use this file.
        return dg.SensorResult(skip_reason=f"{len(items)} queries, the same as stored", cursor=digest)
    return dg.SensorResult(run_requests=[dg.RunRequest()], cursor=digest)


@dg.run_status_sensor(
    name="context_sets_after_source_removal",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[remove_sources_job],
    request_job=context_sets_job,
    default_status=SENSOR_RUNNING,
    description="Rebuilds the context sets after remove_sources succeeded, so removed passages leave the output.",
)
def context_sets_after_source_removal(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=context.dagster_run.run_id)


source_freshness_check = dg.ScheduleDefinition(
    name="source_freshness_check",
    cron_schedule="15 * * * *",
    job=check_sources_job,
    default_status=RUNNING,
    description=(
        "Runs sources_refreshed_recently and no_orphaned_sources every hour: a refresh that stopped happening "
        "turns red, a dropped source's approaching purge shows."
    ),
)

schedules = [knowledge_base_refresh, source_freshness_check]
sensors = [context_sets_automation, source_partitions_sensor, queries_file_sensor, context_sets_after_source_removal]
