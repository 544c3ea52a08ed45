"""Helpers for tests that materialise the asset graph on real resources over loopback."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml
from chromadb.api.shared_system_client import SharedSystemClient

from pipeline.defs import answers, context_sets, evaluation, ingest, removal, rerank, retrieve
from pipeline.defs.endpoints import ChatEndpoint, RerankEndpoint
from pipeline.defs.inference_resources import ChatResource, EmbedderResource, RerankResource
from pipeline.defs.partitions import register_sources
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.demo import LABELLED_QUERIES_FILE, QUERIES_FILE, UNANSWERABLE_QUERIES_FILE, serve_directory, site_dir
from pipeline.local import LocalRerankService, ServiceConfig
from pipeline.stand_ins import local_scorer
from pipeline.store.records import StoredChunk
from pipeline.store.state import StateStore

REPO = Path(__file__).resolve().parents[1]

ALL_ASSETS = [
    *dg.load_assets_from_modules([ingest, retrieve, rerank, context_sets, answers, evaluation]),
    *dg.load_asset_checks_from_modules([ingest, removal, retrieve, rerank, context_sets, answers, evaluation]),
]
INGEST = dg.AssetSelection.groups("ingest")
DOWNSTREAM = dg.AssetSelection.groups("retrieve", "rerank", "context", "answer")
EVALUATE = dg.AssetSelection.groups("evaluate")
TEST_KEY = "test-rerank-key-5f1d0c"


def write_sources(path: Path, sources: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def make_resources(
    data_dir: Path,
    sources_path: Path,
    queries_path: Path,
    rerank_url: str,
    *,
    api_key: str = TEST_KEY,
    model_id: str = "cohere-rerank-3-5",
    database_url: str | None = None,
    labelled_queries_path: Path = LABELLED_QUERIES_FILE,
    unanswerable_queries_path: Path = UNANSWERABLE_QUERIES_FILE,
    chat_endpoint: ChatEndpoint | None = None,
    **rerank_options: object,
) -> dict[str, dg.ConfigurableResource]:
    """The pipeline's resources on these paths; ``rerank_options`` are further RerankResource fields.

    Answers come from the extractive answerer in process unless ``chat_endpoint`` names a chat endpoint."""
    return {
        "files": PipelineFilesResource(
            data_dir=str(data_dir),
            sources_path=str(sources_path),
            queries_path=str(queries_path),
            labelled_queries_path=str(labelled_queries_path),
            unanswerable_queries_path=str(unanswerable_queries_path),
        ),
        "state_store": StateStoreResource(data_dir=str(data_dir), database_url=database_url),
        "chroma": ChromaResource(data_dir=str(data_dir)),
        "embedder": EmbedderResource(),
        "rerank": RerankResource(endpoint=RerankEndpoint(rerank_url, api_key, model_id), **rerank_options),
        "chat": ChatResource(endpoint=chat_endpoint),
    }


@dataclass(frozen=True)
class DemoServices:
    site_url: str
    rerank: LocalRerankService
    resources: dict[str, dg.ConfigurableResource]


@contextmanager
def demo_services(data_dir: Path) -> Iterator[DemoServices]:
    """The demo site and a local rerank service on loopback, and the pipeline's resources on them: the
    site as the one source (``user-guide``), the demo queries, state and indexes under ``data_dir``."""
    with (
        serve_directory(site_dir()) as site_url,
        LocalRerankService(ServiceConfig(api_key=TEST_KEY), scorer=local_scorer()) as service,
    ):
        sources = write_sources(
            data_dir / "sources.yaml",
            [{"name": "user-guide", "start_urls": [site_url], "allow_private_hosts": True, "max_pages": 200}],
        )
        yield DemoServices(site_url, service, make_resources(data_dir, sources, QUERIES_FILE, service.url))


@dataclass
class PipelineRun:
    """Materialises the graph the way the demo does: every source's ingest partition, then the rest."""

    resources: dict[str, dg.ConfigurableResource]
    instance: dg.DagsterInstance

    def ingest(self, source: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        register_sources(self.instance, [source])
        return dg.materialize(
            ALL_ASSETS,
            selection=INGEST,
            partition_key=source,
            resources=self.resources,
            instance=self.instance,
            run_config=run_config,
        )

    def downstream(
        self,
        run_config: dict | None = None,
        raise_on_error: bool = True,
        selection: dg.AssetSelection = DOWNSTREAM,
    ) -> dg.ExecuteInProcessResult:
        """Materialise the assets after ingest (or ``selection`` of them) with their checks."""
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            resources=self.resources,
            instance=self.instance,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )

    def evaluate(self, run_config: dict | None = None, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        return self.downstream(run_config, raise_on_error, selection=EVALUATE)


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    assert events, f"{asset} was not materialised"
    return {key: value.value for key, value in events[-1].materialization.metadata.items()}


def run_concurrently(target: Callable[[], None], threads: int) -> None:
    """Run ``target`` in ``threads`` threads at once and wait for all of them."""
    started = [threading.Thread(target=target) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()


def run_materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Each asset's materialisation metadata in one run, read back from the instance."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        record.event_log_entry.dagster_event.asset_key.to_user_string(): {
            key: value.value for key, value in record.event_log_entry.asset_materialization.metadata.items()
        }
        for record in records
    }


def worker_env(**settings: str) -> dict[str, str]:
    """This environment without any pipeline, Chroma, rerank or Dagster setting, plus ``settings``."""
    prefixes = ("PIPELINE_", "CHROMA_", "RERANK_", "DAGSTER_")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != "DATABASE_URL"}
    return {**inherited, **settings}


def save_page(store: StateStore, url: str, content_hash: str, html: str = "<p>x</p>", source: str = "docs") -> None:
    """Store a fetched page as the crawl stage does."""
    store.pages.save(
        url=url,
        source=source,
        final_url=url,
        status=200,
        content_type="text/html",
        etag=f'"{content_hash}"',
        last_modified=None,
        content_hash=content_hash,
        html=html,
        fetched_at=datetime.now(UTC),
    )


def forget_chroma_clients() -> None:
    """Drop the process's cached Chroma clients, so the next one reads what another process wrote, and
    collect their bindings now: until collected they keep their SQLite connections and the HNSW index,
    and a second client on the same path can then find the database locked."""
    SharedSystemClient.clear_system_cache()
    gc.collect()


def kill_midway(command: list[str], env: dict[str, str], progress: Callable[[], int], at_least: int) -> None:
    """Start a :func:`worker_command`; SIGKILL it once ``progress()`` reaches ``at_least``, as a dyno restart would."""
    started = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while progress() < at_least:
        assert started.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"the run never got to {at_least} of what it was to be killed during"
        time.sleep(0.05)
    os.kill(started.pid, signal.SIGKILL)
    started.wait()


def quiet_dagster_home(directory: Path) -> Path:
    """A new DAGSTER_HOME for worker processes, telemetry off."""
    directory.mkdir()
    (directory / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return directory


def worker_command(*runs: str, run_config: dict | None = None) -> list[str]:
    """``tests/restart_worker.py`` running ``runs`` (``ingest:<source>``, ``context_sets``) in a new process."""
    config = [f"--run-config={json.dumps(run_config)}"] if run_config else []
    return [sys.executable, "-m", "tests.restart_worker", *config, *runs]


def run_worker(command: list[str], env: dict[str, str], dagster_home: Path, timeout: float = 600) -> dict[str, dict]:
    """Run a :func:`worker_command` to the end; returns each run's materialisation metadata by asset."""
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-6000:]
    run_ids = json.loads(completed.stdout.strip().splitlines()[-1])
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return {run: run_materializations(instance, run_id) for run, run_id in run_ids.items()}


def page_chunks(url: str, texts: list[str], source: str = "docs") -> list[StoredChunk]:
    """One stored chunk per text of a page, titled after the page's file name, as the chunker would store them."""
    title = url.rsplit("/", 1)[1].removesuffix(".html").title()
    return [
        StoredChunk(
            chunk_id=f"{title.lower()}-{hashlib.sha1(text.encode()).hexdigest()[:10]}",
            source=source,
            url=url,
            title=title,
            heading_path=(title,),
            text=text,
            embedding_text=f"{title}\n{text}",
            token_count=len(text.split()),
            position=position,
        )
        for position, text in enumerate(texts)
    ]
