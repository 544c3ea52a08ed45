"""``pipeline demo``: every asset end to end on the bundled site, offline; ``pipeline serve-demo``: the site and the
local stand-ins, for ``dagster dev``."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path

from pipeline import settings
from pipeline.demo import SITE_PORT, SOURCES_FILE, serve_directory, site_dir
from pipeline.stand_ins import (
    LOCAL_DEV_KEY,
    local_chat_service,
    local_embedding_service,
    local_rerank_service,
    start_missing_stand_ins,
)

# The demo prints its own summary; Dagster's per-step debug events would bury it.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _demo_instance():
    import dagster as dg

    from pipeline.instance import prepare_instance

    # The demo's runs land in a persistent instance, so `dagster dev` shows them afterwards.
    prepare_instance()
    return dg.DagsterInstance.get()


def run_demo(top: int, local_embeddings: bool = False) -> int:
    from pipeline.crawl.sources import load_sources
    from pipeline.defs.jobs import context_sets_job, ingest_source_job
    from pipeline.defs.partitions import register_sources
    from pipeline.demo import report
    from pipeline.inputs import is_url

    started = time.perf_counter()
    data_dir = Path(settings.string("PIPELINE_DATA_DIR"))
    sources_location = settings.string("PIPELINE_SOURCES")
    with ExitStack() as stack:
        if not is_url(sources_location) and Path(sources_location).resolve() == SOURCES_FILE.resolve():
            stack.enter_context(serve_directory(site_dir(), port=SITE_PORT))
        start_missing_stand_ins(stack, local_embeddings=local_embeddings)
        # Loaded now: its resources read the EMBEDDING_* and INFERENCE_* settings just given.
        from pipeline.definitions import defs

        instance = stack.enter_context(_demo_instance())
        sources = load_sources(sources_location)
        register_sources(instance, [source.name for source in sources])
        for source in sources:
            print(f"ingesting source {source.name} ...", flush=True)
            result = defs.resolve_job_def(ingest_source_job.name).execute_in_process(
                instance=instance, partition_key=source.name, run_config=QUIET_RUN_CONFIG
            )
            report.print_materializations(result)
        print("retrieving, reranking, packing and answering ...", flush=True)
        result = defs.resolve_job_def(context_sets_job.name).execute_in_process(
            instance=instance, run_config=QUIET_RUN_CONFIG
        )
        report.print_materializations(result)
        context_sets = data_dir / "ranked_context_sets.jsonl"
        report.print_context_sets(context_sets, result, top)
        report.print_answers(data_dir / "answers.jsonl", context_sets, result)
    print(f"demo finished in {time.perf_counter() - started:.1f}s; Dagster home: {os.environ['DAGSTER_HOME']}")
    return 0


def serve_demo(site_port: int, rerank_port: int, embedding_port: int, chat_port: int) -> int:
    from pipeline.embedding import MiniLMEmbedder

    with ExitStack() as stack:
        # One all-MiniLM-L6-v2 session for both stand-ins.
        embedder = MiniLMEmbedder()
        site_url = stack.enter_context(serve_directory(site_dir(), port=site_port))
        rerank_url = local_rerank_service(stack, rerank_port, embedder)
        embedding_url = local_embedding_service(stack, embedding_port, embedder)
        chat_url = local_chat_service(stack, chat_port)
        print(f"demo docs site:           {site_url}")
        print(f"local rerank service:     {rerank_url}  (RERANK_KEY={settings.SETTINGS['RERANK_KEY'].default})")
        print(f"local embeddings service: {embedding_url}  (EMBEDDING_KEY={LOCAL_DEV_KEY})")
        print(f"local chat service:       {chat_url}  (INFERENCE_KEY={LOCAL_DEV_KEY})")
        print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    return 0
