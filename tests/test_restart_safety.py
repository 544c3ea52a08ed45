"""Restart safety with the durable state on PostgreSQL, the way a Heroku worker dyno restarts.

Each worker start is a fresh process (``tests/restart_worker.py``) running the deployed jobs with
``DATABASE_URL=postgres://…`` and the rest of its settings from the environment. Between starts
the data directory (Chroma, the lexical index, ranked_context_sets.jsonl) is deleted, as a dyno
restart deletes its disk. The next start must restore Chroma from the embeddings in PostgreSQL
without embedding anything, rebuild the lexical index, revalidate pages with conditional GETs,
bill no rerank search units, and publish the same context sets from the same rankings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.demo import serve_directory, site_dir
from pipeline.embedding import MODEL_NAME
from pipeline.local import LocalRerankService, ServiceConfig
from pipeline.stand_ins import local_scorer
from pipeline.store.records import Candidate, ContextSet
from pipeline.store.state import StateStore
from pipeline.store.vectors import (
    DEFAULT_COLLECTION,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    ChromaConnection,
    VectorIndex,
    collection_name,
)
from tests.commands import chroma_server_on_loopback
from tests.conftest import fresh_postgres_database
from tests.support import TEST_KEY, quiet_dagster_home, run_worker, worker_command, worker_env, write_sources

SOURCE = "user-guide"
INGEST = f"ingest:{SOURCE}"
QUERIES = 12  # in pipeline/demo/queries.yaml
# Three worker starts (about 30 s each here) happen in the setup of the first test.
pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Published:
    """What a worker start leaves behind for the QA system, and the rankings it came from."""

    candidates: dict[str, list[Candidate]]
    context_sets: dict[str, ContextSet]
    jsonl: str


@dataclass
class Worker:
    """Starts worker processes on one data directory, Dagster home and state database."""

    env: dict[str, str]
    data_dir: Path
    dagster_home: Path
    store: StateStore

    def start(self, *runs: str) -> dict[str, dict[str, dict]]:
        """Run ``runs`` in a new process; returns each run's materialisation metadata by asset."""
        return run_worker(worker_command(*runs), self.env, self.dagster_home)

    def wipe_disk(self) -> None:
        shutil.rmtree(self.data_dir)

    def published(self) -> Published:
        return Published(
            candidates=self.store.rankings.candidates(),
            context_sets=self.store.context_sets.latest(),
            jsonl=(self.data_dir / "ranked_context_sets.jsonl").read_text(),
        )


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, LocalRerankService]]:
    with (
        serve_directory(site_dir()) as site_url,
        LocalRerankService(ServiceConfig(api_key=TEST_KEY), scorer=local_scorer()) as rerank,
    ):
        yield site_url, rerank


def _worker(tmp_path: Path, database_url: str, site_url: str, rerank_url: str, **settings: str) -> Worker:
    data_dir, dagster_home = tmp_path / "data", quiet_dagster_home(tmp_path / "dagster_home")
    sources = write_sources(
        tmp_path / "sources.yaml",
        [{"name": SOURCE, "start_urls": [site_url], "allow_private_hosts": True, "max_pages": 200}],
    )
    env = worker_env(
        DAGSTER_HOME=str(dagster_home),
        # The scheme Heroku Postgres hands out.
        DATABASE_URL=database_url.replace("postgresql://", "postgres://", 1),
        PIPELINE_DATA_DIR=str(data_dir),
        PIPELINE_SOURCES=str(sources),
        RERANK_URL=rerank_url,
        RERANK_KEY=TEST_KEY,
        **settings,
    )
    return Worker(env, data_dir, dagster_home, StateStore(database_url))


@pytest.fixture(scope="module")
def restarts(tmp_path_factory, module_postgres_url, services):
    """First start, then two restarts on a wiped disk: the second runs only build_context_sets."""
    site_url, rerank = services
    worker = _worker(tmp_path_factory.mktemp("worker"), module_postgres_url, site_url, rerank.url)
    first = worker.start(INGEST, "context_sets")
    before = worker.published()
    requests_before = len(rerank.requests)

    worker.wipe_disk()
    second = worker.start(INGEST, "context_sets")
    after_second = worker.published()
    requests_after_second = len(rerank.requests)

    worker.wipe_disk()
    third = worker.start("context_sets")
    yield {
        "worker": worker,
        "first": first,
        "second": second,
        "third": third,
        "before": before,
        "after_second": after_second,
        "after_third": worker.published(),
        "rerank_requests": (requests_before, requests_after_second, len(rerank.requests)),
    }
    worker.store.dispose()


def test_the_first_start_embeds_everything_and_bills_every_query(restarts):
    ingest, downstream = restarts["first"][INGEST], restarts["first"]["context_sets"]
    assert ingest["crawled_pages"]["pages_new"] > 0
    assert ingest["vector_index"]["chunks_embedded"] == ingest["vector_index"]["vectors_total"] > 0
    assert downstream["reranked_candidates"]["billed_search_units"] == QUERIES
    assert restarts["rerank_requests"][0] == QUERIES
    assert len(restarts["before"].context_sets) == QUERIES


def test_after_a_restart_chroma_is_restored_from_postgres_without_embedding(restarts):
    index = restarts["second"][INGEST]["vector_index"]
    first_index = restarts["first"][INGEST]["vector_index"]
    assert index["chunks_embedded"] == 0 and index["headers_embedded"] == 0
    assert (
        index["vectors_restored"] == index["vectors_total"] == index["collection_count"] == first_index["vectors_total"]
    )
    assert restarts["second"][INGEST]["lexical_index"]["rebuilt"] is True


def test_after_a_restart_pages_are_revalidated_not_recrawled(restarts):
    crawl = restarts["second"][INGEST]["crawled_pages"]
    assert crawl["pages_new"] == crawl["pages_changed"] == 0
    assert (
        crawl["pages_not_modified"] == crawl["pages_fetched"] == restarts["first"][INGEST]["crawled_pages"]["pages_new"]
    )
    assert restarts["second"][INGEST]["extracted_documents"]["documents_extracted"] == 0


def test_after_a_restart_nothing_is_billed_and_the_same_context_sets_are_published(restarts):
    rerank = restarts["second"]["context_sets"]["reranked_candidates"]
    assert rerank["billed_search_units"] == 0 and rerank["cache_hits"] == QUERIES
    first_requests, second_requests, _ = restarts["rerank_requests"]
    assert second_requests == first_requests
    # Retrieval over the restored indexes ranks exactly as before (Chroma's ef_search, pipeline/store/vectors.py).
    assert restarts["after_second"] == restarts["before"]


def test_a_restart_that_only_builds_context_sets_restores_both_indexes_itself(restarts):
    retrieve = restarts["third"]["context_sets"]["retrieved_candidates"]
    total = restarts["first"][INGEST]["vector_index"]["vectors_total"]
    assert retrieve["vectors_restored"] == total and retrieve["lexical_index_rebuilt"] is True
    assert restarts["third"]["context_sets"]["reranked_candidates"]["billed_search_units"] == 0
    assert restarts["rerank_requests"][2] == restarts["rerank_requests"][0]
    assert restarts["after_third"] == restarts["before"]
    runs = restarts["worker"].store.context_sets.runs()
    assert len(runs) == 3 and all(run.queries == run.reranked == QUERIES for run in runs)


@pytest.fixture
def chroma_server(tmp_path) -> Iterator[int]:
    """A Chroma server on loopback; yields its port."""
    with chroma_server_on_loopback(tmp_path) as port:
        yield port


def test_with_chroma_host_a_restart_keeps_the_server_collection_and_rebuilds_nothing_there(
    tmp_path, services, chroma_server
):
    site_url, rerank = services
    with fresh_postgres_database() as database_url:
        worker = _worker(
            tmp_path, database_url, site_url, rerank.url, CHROMA_HOST="127.0.0.1", CHROMA_PORT=str(chroma_server)
        )
        first = worker.start(INGEST)
        worker.wipe_disk()
        second = worker.start(INGEST)
        worker.store.dispose()

    assert first[INGEST]["vector_index"]["chunks_embedded"] > 0
    index = second[INGEST]["vector_index"]
    assert index["vectors_restored"] == index["chunks_embedded"] == 0
    assert index["collection_count"] == first[INGEST]["vector_index"]["vectors_total"]
    # The lexical index lives on the dyno's disk either way.
    assert second[INGEST]["lexical_index"]["rebuilt"] is True


def test_a_collection_created_before_the_ef_search_setting_gets_it(tmp_path):
    # The collection came from an earlier deploy, made in a process that is gone before this one opens
    # the store (as on Heroku: in this process, Chroma's client would still hold the SQLite file).
    name = collection_name(DEFAULT_COLLECTION, MODEL_NAME)
    earlier_deploy = f"""
import chromadb
from chromadb.config import Settings
client = chromadb.PersistentClient(path={str(tmp_path / "chroma")!r}, settings=Settings(anonymized_telemetry=False))
client.create_collection({name!r}, configuration={{"hnsw": {{"space": "cosine"}}}}, embedding_function=None)
print(client.get_collection({name!r}).configuration["hnsw"]["ef_search"])
"""
    made = subprocess.run([sys.executable, "-c", earlier_deploy], capture_output=True, text=True, check=True)
    assert made.stdout.split() == ["100"]
    reopened = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), MODEL_NAME)
    assert reopened.collection.configuration["hnsw"]["ef_search"] == HNSW_EF_SEARCH
    # Fixed at creation: the earlier collection keeps Chroma's default.
    assert reopened.collection.configuration["hnsw"]["ef_construction"] == 100


def test_a_new_collection_is_built_with_the_pipelines_hnsw_settings(tmp_path):
    index = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), MODEL_NAME)
    hnsw = index.collection.configuration["hnsw"]
    assert (hnsw["ef_construction"], hnsw["ef_search"]) == (HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH)
