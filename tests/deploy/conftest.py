"""One local "Heroku app" for the deploy tests: real PostgreSQL, the demo site and the local rerank service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import fresh_postgres_database
from tests.deploy.heroku_app import HerokuApp, local_heroku_app


@pytest.fixture(scope="package")
def heroku_app(tmp_path_factory) -> Iterator[HerokuApp]:
    with (
        fresh_postgres_database() as database,
        local_heroku_app(tmp_path_factory.mktemp("heroku-app"), database) as app,
    ):
        yield app
