"""Running the real ``ingest_source`` job in this process, as the Dagster UI would, and what one run cost.

Shared by the benchmarks that ingest a corpus and refresh it (``refresh.py``, ``scale.py``). The
caller sets ``PIPELINE_DATA_DIR``, ``PIPELINE_SOURCES`` (and ``DATABASE_URL`` for PostgreSQL)
before the pipeline is imported: ``pipeline/settings.py`` reads them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.step_memory import StepMemory, execute_in_process

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Variables that switch the pipeline to remote embeddings (issue: Heroku Inference embeddings).
EMBEDDING_VARIABLES = ("EMBEDDING_URL", "EMBEDDING_KEY", "EMBEDDING_MODEL_ID")


@dataclass(frozen=True)
class IngestRun:
    seconds: float
    steps: dict[str, float]  # step key -> seconds
    metadata: dict[str, dict[str, Any]]  # asset -> its materialization's metadata
    checks: dict[str, bool]  # check name -> passed
    memory: dict[str, StepMemory]  # step key -> the process's peak RSS while it ran, RSS at its end

    def line(self, pages: int) -> str:
        steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in self.steps.items())
        return f"{self.seconds:.2f} s ({1000 * self.seconds / pages:.2f} ms/page); steps: {steps}"


def embedding_mode(mode: str) -> str:
    """Set the environment for ``mode`` (``local``: the ONNX model in the run process; ``remote``:
    the EMBEDDING_* variables already set, e.g. to a stand-in) and return how to name it."""
    if mode == "local":
        for name in EMBEDDING_VARIABLES:
            os.environ.pop(name, None)
        return "local (all-MiniLM-L6-v2 int8, ONNX Runtime in the run process)"
    missing = [name for name in EMBEDDING_VARIABLES if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"--embeddings remote needs {', '.join(missing)} set (e.g. to the embeddings stand-in)")
    return f"remote ({os.environ['EMBEDDING_MODEL_ID']} at {os.environ['EMBEDDING_URL']})"


def write_sources(path: Path, name: str, start_url: str, **fields: Any) -> None:
    source = {"name": name, "start_urls": [start_url], "allow_private_hosts": True, **fields}
    path.write_text(yaml.safe_dump({"sources": [source]}))


@contextmanager
def ingest_job(source: str, resources: dict[str, Any] | None = None) -> Iterator[Any]:
    """A function running the ``ingest_source`` job for ``source`` on an ephemeral instance, with
    ``resources`` (resource key -> config) as the run config's resources."""
    import dagster as dg

    from pipeline.definitions import defs
    from pipeline.defs.jobs import ingest_source_job
    from pipeline.defs.partitions import register_sources

    with dg.DagsterInstance.ephemeral() as instance:
        register_sources(instance, [source])
        job = defs.resolve_job_def(ingest_source_job.name)
        run_config = {**QUIET, "resources": {key: {"config": config} for key, config in (resources or {}).items()}}

        def run() -> IngestRun:
            started = time.perf_counter()
            result, memory = execute_in_process(job, instance, partition_key=source, run_config=run_config)
            seconds = time.perf_counter() - started
            if not result.success:
                raise RuntimeError(f"the ingest_source run for {source} failed")
            return IngestRun(
                seconds,
                {step.step_key: step.end_time - step.start_time for step in instance.get_run_step_stats(result.run_id)},
                {
                    event.asset_key.to_user_string(): {
                        key: value.value for key, value in event.materialization.metadata.items()
                    }
                    for event in result.get_asset_materialization_events()
                },
                {check.check_name: check.passed for check in result.get_asset_check_evaluations()},
                memory,
            )

        yield run
