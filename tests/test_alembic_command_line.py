"""The ``alembic`` command line ([tool.alembic] in pyproject.toml), as a developer runs it to write the next
migration: it migrates the state store the settings name, and the migrated schema matches the schema module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]


def _alembic(*arguments: str, environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *arguments], cwd=REPO, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_and_check_run_on_the_state_store_the_settings_name(backend, tmp_path, request):
    environment = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    environment["PIPELINE_DATA_DIR"] = str(tmp_path)
    if backend == "postgresql":
        environment["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    _alembic("upgrade", "head", environment=environment)
    assert "No new upgrade operations detected" in _alembic("check", environment=environment)
    url = environment.get("DATABASE_URL") or f"sqlite:///{tmp_path / 'state.db'}"
    engine = sa.create_engine(url)
    try:
        assert "pipeline_pages" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
