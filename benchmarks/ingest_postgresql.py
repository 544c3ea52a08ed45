"""Ingest the PostgreSQL 15 manual (Debian ``postgresql-doc-15``) into a data directory, timing each stage.

    flock /work/wt/bench.lock uv run python benchmarks/ingest_postgresql.py DATA_DIR

Serves ``/usr/share/doc/postgresql-doc-15/html`` on 127.0.0.1:18900 (the base URL
the labelled set's paths are relative to) and runs the ``ingest_source`` job for one
source, ``postgresql``, exactly as the Dagster UI would. Prints the wall-clock time,
each asset's step time, the index metadata, and what hybrid retrieval and the local
scorer add to ingestion (the lexical index and the header-line embeddings) as a share
of embedding the chunks and of the whole ingest, all from this one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import yaml

CORPUS_DIR = Path("/usr/share/doc/postgresql-doc-15/html")
PORT = 18900


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    arguments = parser.parse_args()
    data_dir = arguments.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sources = data_dir / "sources.yaml"
    os.environ["PIPELINE_DATA_DIR"] = str(data_dir)
    os.environ["PIPELINE_SOURCES"] = str(sources)

    import dagster as dg

    from pipeline.definitions import defs
    from pipeline.defs.jobs import ingest_source_job
    from pipeline.defs.partitions import register_sources
    from pipeline.demo import serve_directory

    with serve_directory(CORPUS_DIR, port=PORT) as url:
        source = {
            "name": "postgresql",
            "start_urls": [url + "index.html"],
            "allow_private_hosts": True,
            "max_pages": 2000,
            "max_depth": 10,
        }
        sources.write_text(yaml.safe_dump({"sources": [source]}))
        with dg.DagsterInstance.ephemeral() as instance:
            register_sources(instance, ["postgresql"])
            started = time.perf_counter()
            result = defs.resolve_job_def(ingest_source_job.name).execute_in_process(
                instance=instance,
                partition_key="postgresql",
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            elapsed = time.perf_counter() - started
            print(f"ingest wall clock {elapsed:.1f} s")
            step_seconds = {
                step.step_key: step.end_time - step.start_time for step in instance.get_run_step_stats(result.run_id)
            }
            for step_key, seconds in step_seconds.items():
                print(f"  step {step_key}: {seconds:.1f} s")
            metadata = {
                event.asset_key.to_user_string(): {key: value.value for key, value in event.materialization.metadata.items()}
                for event in result.get_asset_materialization_events()
            }
            for asset, values in metadata.items():
                print(f"  {asset}: {values}")
            # Every figure comes from this one run, so the ratios do not depend on what else the machine ran.
            lexical = step_seconds["lexical_index"]
            chunks = metadata["vector_index"]["embed_seconds"]
            headers = metadata["vector_index"]["header_embed_seconds"]
            print(
                f"chunk embedding {chunks:.1f} s; lexical index {lexical:.1f} s = {100 * lexical / chunks:.2f} % of it; "
                f"header lines {headers:.1f} s = {100 * headers / chunks:.2f} % of it; "
                f"both together {100 * (lexical + headers) / elapsed:.2f} % of the ingest wall clock"
            )


if __name__ == "__main__":
    main()
