"""One start of a worker dyno for tests/test_restart_safety.py: a fresh process running the deployed jobs.

Settings come from the environment, as on Heroku (``pipeline.definitions`` builds the resources
from it), and Dagster's storage from ``DAGSTER_HOME``, which outlives the wiped data directory the
way Postgres-backed instance storage outlives a dyno. Each argument is a run to execute in order:
``ingest:<source>`` (registered first) or ``context_sets``; ``--run-config=JSON`` before them is the
run config of every run. Prints {argument: run ID} as JSON.
"""

from __future__ import annotations

import json
import sys

import dagster as dg

from pipeline.definitions import defs
from pipeline.defs.jobs import context_sets_job, ingest_source_job
from pipeline.defs.partitions import register_sources


def main(runs: list[str]) -> int:
    run_config = {}
    if runs and runs[0].startswith("--run-config="):
        run_config = json.loads(runs.pop(0).removeprefix("--run-config="))
    run_ids = {}
    with dg.DagsterInstance.get() as instance:
        for run in runs:
            if run.startswith("ingest:"):
                source = run.removeprefix("ingest:")
                register_sources(instance, [source])
                result = defs.resolve_job_def(ingest_source_job.name).execute_in_process(
                    instance=instance, partition_key=source, run_config=run_config
                )
            elif run == "context_sets":
                result = defs.resolve_job_def(context_sets_job.name).execute_in_process(
                    instance=instance, run_config=run_config
                )
            else:
                raise SystemExit(f"unknown run {run!r}: use ingest:<source> or context_sets")
            run_ids[run] = result.run_id
    print(json.dumps(run_ids))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
