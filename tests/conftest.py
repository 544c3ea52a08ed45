"""Shared fixtures: real PostgreSQL databases, the demo site and the local rerank service on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from pipeline.store.state import StateStore, sqlite_url

# This machine (and CI) runs PostgreSQL on 127.0.0.1:5432 with trust auth.
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty, uniquely named PostgreSQL database; dropped (connections closed) on exit."""
    name = f"pipeline_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database shared by the tests of one module."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[StateStore]:
    """A new, empty state store: on SQLite, and on a fresh PostgreSQL database."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = StateStore(url)
    yield store
    store.dispose()


# First: pytest-xdist reads the groups in its own hook of the same name.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n`` (scripts/test), keep each module on one worker, and tests/deploy whole:
    module- and package-scoped fixtures (a booted Heroku app, three worker restarts) are then set up once."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = "tests/deploy" if module.startswith("tests/deploy/") else module
        item.add_marker(pytest.mark.xdist_group(group))
