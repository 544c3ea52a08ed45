"""A local stand-in for a Heroku app: the Procfile's processes started by honcho, one "dyno" each.

Every dyno gets its own data directory (Heroku dynos share no disk) and the same config vars,
with ``DATABASE_URL`` in Heroku's ``postgres://`` form. The web dyno is reached with HTTP basic
credentials, as through Heroku's router; runs are launched through its GraphQL API.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import yaml

from pipeline.demo import QUERIES_FILE, serve_directory, site_dir
from pipeline.embedding.contract import MODEL_DIMENSIONS
from pipeline.instance import POSTGRES_URL_VARIABLE
from pipeline.local import (
    EmbeddingServiceConfig,
    HashedVectors,
    LocalEmbeddingService,
    LocalRerankService,
    ServiceConfig,
    StoredEmbeddings,
)
from pipeline.stand_ins import local_scorer
from pipeline.store.state import StateStore

REPO = Path(__file__).resolve().parents[2]
# Distinctive, so that a leak into any log or stored event is unmistakable.
RERANK_KEY = "inf-deploy-" + secrets.token_hex(8)
EMBEDDING_KEY = "inf-deploy-embed-" + secrets.token_hex(8)
EMBEDDING_MODEL = "cohere-embed-multilingual"
WEB_PASSWORD = "web-" + secrets.token_hex(8)
DB_PASSWORD = "db-" + secrets.token_hex(8)
HONCHO = Path(sys.executable).with_name("honcho")
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


class Dyno:
    """One Procfile process type under honcho, with its own disk and log file."""

    def __init__(self, app: HerokuApp, process: str) -> None:
        self.app = app
        self.process = process
        self.disk = app.root / f"{process}-dyno"
        self.log = app.root / f"{process}.log"
        self.popen: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        data_dir = self.disk / "data"
        return {
            **self.app.config_vars,
            "DYNO": f"{self.process}.1",
            "PIPELINE_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster_home"),
        }

    def start(self) -> None:
        self.disk.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            self.popen = subprocess.Popen(
                [str(HONCHO), "-f", str(REPO / "Procfile"), "-d", str(REPO), "start", self.process],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class HerokuApp:
    def __init__(self, root: Path, config_vars: dict[str, str], username: str, password: str) -> None:
        self.root = root
        self.config_vars = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **config_vars}
        self.auth = (username, password)
        self.web = Dyno(self, "web")
        self.worker = Dyno(self, "worker")
        self.release = Dyno(self, "release")
        self.url = f"http://127.0.0.1:{config_vars['PORT']}"

    def wait_until_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.web.popen.poll() is None, f"web dyno exited:\n{self.web.output()[-3000:]}"
            try:
                if (
                    httpx.get(self.url + "/health", timeout=2).status_code == 200
                    and self.graphql("{ version }")["version"]
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"web dyno not up after {timeout}s:\n{self.web.output()[-3000:]}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            self.url + "/graphql", json={"query": query, "variables": variables or {}}, auth=self.auth, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def launch_run(self, job: str, partition: str | None = None) -> str:
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        data = self.graphql(
            """mutation Launch($params: ExecutionParams!) {
                 launchRun(executionParams: $params) {
                   __typename
                   ... on LaunchRunSuccess { run { runId } }
                   ... on PythonError { message }
                   ... on InvalidSubsetError { message }
                   ... on RunConfigValidationInvalid { errors { message } }
                 }
               }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": "pipeline",
                        "repositoryName": "__repository__",
                        "jobName": job,
                    },
                    "runConfigData": {},
                    "executionMetadata": {"tags": tags},
                }
            },
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def runs(self) -> list[dict[str, Any]]:
        return self.graphql(
            """{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"""
        )["runsOrError"]["results"]

    def wait_for_run(self, run_id: str, timeout: float = 420) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.graphql(
                "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )
            status = run["runOrError"]["status"]
            if status in TERMINAL_STATUSES:
                return status
            time.sleep(2)
        raise AssertionError(f"run {run_id} not finished after {timeout}s:\n{self.worker.output()[-4000:]}")

    def instance(self) -> dg.DagsterInstance:
        """The app's Dagster instance, opened from the web dyno's generated dagster.yaml."""
        return dg.DagsterInstance.from_config(self.web.environment()["DAGSTER_HOME"])


def materialization_metadata(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict[str, Any]:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = record.event_log_entry.dagster_event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"run {run_id} did not materialise {asset}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_heroku_app(
    root: Path,
    database: str,
    sources: list[dict] | None = None,
    queries: Path = QUERIES_FILE,
    remote_embeddings: bool = False,
) -> Iterator[HerokuApp]:
    """Release, then web and worker, against ``database``, the demo site (or ``sources``) and a local rerank add-on.

    ``remote_embeddings``: with a local embeddings add-on too, the ``--fast`` stand-in giving hashed
    vectors as long as Cohere Embed Multilingual's (1,024 numbers), so the dynos hold what they
    would with the real add-on and the ingest is not bound by the stand-in's CPU.
    """
    with ExitStack() as stack:
        if sources is None:
            site = stack.enter_context(serve_directory(site_dir()))
            sources = [{"name": "user-guide", "start_urls": [site], "max_pages": 200, "allow_private_hosts": True}]
        sources_file = root / "sources.yaml"
        sources_file.write_text(yaml.safe_dump({"sources": sources}))
        # The rerank "add-on": scores with the embeddings the pipeline stored in the app's database.
        store = StateStore(database)
        stack.callback(store.dispose)
        scorer = local_scorer(known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts))
        rerank = stack.enter_context(LocalRerankService(ServiceConfig(api_key=RERANK_KEY), scorer=scorer, warm=True))
        embedding_vars = {}
        if remote_embeddings:
            embeddings = stack.enter_context(
                LocalEmbeddingService(
                    EmbeddingServiceConfig(api_key=EMBEDDING_KEY),
                    vectors=HashedVectors(MODEL_DIMENSIONS[EMBEDDING_MODEL]),
                    warm=True,
                )
            )
            embedding_vars = {
                "EMBEDDING_URL": embeddings.url,
                "EMBEDDING_KEY": EMBEDDING_KEY,
                "EMBEDDING_MODEL_ID": EMBEDDING_MODEL,
            }
        # Heroku's form of the URL; trust auth ignores the password, which only has to stay secret.
        heroku_database_url = database.replace("postgresql://postgres@", f"postgres://postgres:{DB_PASSWORD}@")
        app = HerokuApp(
            root,
            {
                "PORT": str(_free_port()),
                "DATABASE_URL": heroku_database_url,
                "RERANK_URL": rerank.url,
                "RERANK_KEY": RERANK_KEY,
                "RERANK_MODEL_ID": "cohere-rerank-3-5",
                "WEB_PASSWORD": WEB_PASSWORD,
                "PIPELINE_SOURCES": str(sources_file),
                "PIPELINE_QUERIES": str(queries),
                **embedding_vars,
            },
            username="admin",
            password=WEB_PASSWORD,
        )
        app.database_url = database
        stack.callback(app.worker.stop)
        stack.callback(app.web.stop)
        app.release.start()
        assert app.release.wait(180) == 0, app.release.output()
        app.web.start()
        app.worker.start()
        app.wait_until_up()
        # This process reads the app's Dagster storage the way the dynos do.
        os.environ[POSTGRES_URL_VARIABLE] = database
        stack.callback(os.environ.pop, POSTGRES_URL_VARIABLE, None)
        yield app
