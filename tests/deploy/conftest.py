"""One local "Heroku app" for the deploy tests: real PostgreSQL, the demo site and the local rerank service."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import yaml

from pipeline.demo import QUERIES_FILE, serve_directory, site_dir
from pipeline.embedding import MiniLMEmbedder
from pipeline.instance import POSTGRES_URL_VARIABLE
from pipeline.rerank import LocalRelevanceScorer, LocalRerankService, ServiceConfig
from pipeline.rerank.known_vectors import StoredEmbeddings
from pipeline.store.state import StateStore
from tests.conftest import fresh_postgres_database
from tests.deploy.heroku_app import HerokuApp

# Distinctive, so that a leak into any log or stored event is unmistakable.
RERANK_KEY = "inf-deploy-" + secrets.token_hex(8)
WEB_PASSWORD = "web-" + secrets.token_hex(8)
DB_PASSWORD = "db-" + secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="package")
def heroku_app(tmp_path_factory) -> Iterator[HerokuApp]:
    root = tmp_path_factory.mktemp("heroku-app")
    with ExitStack() as stack:
        database = stack.enter_context(fresh_postgres_database())
        site = stack.enter_context(serve_directory(site_dir()))
        sources = root / "sources.yaml"
        sources.write_text(
            yaml.safe_dump(
                {"sources": [{"name": "user-guide", "start_urls": [site], "max_pages": 200, "allow_private_hosts": True}]}
            )
        )
        # The rerank "add-on": scores with the embeddings the pipeline stored in the app's database.
        store = StateStore(database)
        stack.callback(store.dispose)
        scorer = LocalRelevanceScorer(MiniLMEmbedder(), known_vectors=StoredEmbeddings(store))
        rerank = stack.enter_context(LocalRerankService(ServiceConfig(api_key=RERANK_KEY), scorer=scorer, warm=True))
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
                "PIPELINE_SOURCES": str(sources),
                "PIPELINE_QUERIES": str(QUERIES_FILE),
            },
            username="admin",
            password=WEB_PASSWORD,
        )
        stack.callback(app.worker.stop)
        stack.callback(app.web.stop)
        app.release.start()
        assert app.release.wait(180) == 0, app.release.output()
        app.web.start()
        app.worker.start()
        app.wait_until_up()
        # The test process reads the app's Dagster storage the way the dynos do.
        os.environ[POSTGRES_URL_VARIABLE] = database
        stack.callback(os.environ.pop, POSTGRES_URL_VARIABLE, None)
        app.database_url = database
        yield app
