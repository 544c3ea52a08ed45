"""The Dagster instance configuration (``dagster.yaml``), generated from the environment at boot.

Every process (the demo, ``dagster dev``, and on Heroku the release, web and worker dynos)
writes the same ``dagster.yaml`` into ``DAGSTER_HOME`` before it opens the instance, so the
configuration follows the config vars instead of a file on a disk that Heroku wipes.

- Storage: SQLite files in ``DAGSTER_HOME`` by default; run, event log and schedule storage
  on PostgreSQL when ``DATABASE_URL`` is set. The URL (it holds the password) is never written
  into ``dagster.yaml``, which the Dagster UI displays: the file names an environment variable,
  :data:`POSTGRES_URL_VARIABLE`, that this module sets to ``DATABASE_URL`` rewritten from
  Heroku's ``postgres://`` to the ``postgresql://`` SQLAlchemy accepts. Child processes (the
  daemon's code server and run workers) inherit it.
- Runs go through the queued run coordinator, so a run launched from the UI or by a schedule
  waits for the daemon (the worker dyno) and executes there, at most
  ``PIPELINE_MAX_CONCURRENT_RUNS`` at once. Tag limits keep two runs from writing the context
  sets, or crawling the same source, at the same time even when more runs are allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline import settings
from pipeline.run_tags import WRITES_CONTEXT_SETS, WRITES_TAG
from pipeline.store.state import normalize_database_url, state_url

POSTGRES_URL_VARIABLE = "PIPELINE_DAGSTER_POSTGRES_URL"


def dagster_home() -> Path:
    """``DAGSTER_HOME``, defaulting to ``<PIPELINE_DATA_DIR>/dagster_home``; exported for Dagster to read."""
    home = Path(settings.value("DAGSTER_HOME") or Path(settings.string("PIPELINE_DATA_DIR")) / "dagster_home").resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def uses_postgres() -> bool:
    return settings.is_set("DATABASE_URL")


def state_store_url() -> str:
    """The pipeline's state store: ``DATABASE_URL`` when set, else SQLite in ``PIPELINE_DATA_DIR``."""
    return state_url(settings.value("DATABASE_URL"), settings.string("PIPELINE_DATA_DIR"))


def instance_config() -> dict[str, Any]:
    """The ``dagster.yaml`` contents for the current environment (no secret values in it)."""
    config: dict[str, Any] = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "runs": {
                "max_concurrent_runs": settings.integer("PIPELINE_MAX_CONCURRENT_RUNS", minimum=1),
                "tag_concurrency_limits": [
                    {"key": WRITES_TAG, "value": WRITES_CONTEXT_SETS[WRITES_TAG], "limit": 1},
                    # One run per source partition: two crawls of one site would race on its pages.
                    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
                ],
            },
            # Ops in a pool (the rerank step) run one at a time across runs, so two runs never
            # pace themselves independently against the same requests-per-minute limit.
            "pools": {"default_limit": 1},
        },
        # A run whose worker dyno restarts mid-run is marked failed instead of hanging in STARTED.
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 300, "poll_interval_seconds": 60},
        # A run lost to a dyno restart is retried once; a step that failed on its own is not.
        "run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False},
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }
    if uses_postgres():
        postgres = {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}
        config["storage"] = {"postgres": postgres}
        # Compute logs would land on the worker's disk, which the web dyno cannot read and
        # Heroku wipes; the event log in PostgreSQL carries every step's structured logs.
        config["compute_logs"] = {
            "module": "dagster.core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
    return config


def prepare_instance() -> Path:
    """Write ``dagster.yaml`` for this environment into ``DAGSTER_HOME``; returns the home directory.

    Call before ``DagsterInstance.get()`` or before starting a Dagster process.
    """
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if uses_postgres():
        os.environ[POSTGRES_URL_VARIABLE] = normalize_database_url(settings.string("DATABASE_URL"))
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(), sort_keys=False), encoding="utf-8")
    return home
