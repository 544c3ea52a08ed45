"""dagster.yaml generated from the environment: SQLite by default, PostgreSQL from DATABASE_URL."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator

from pipeline.instance import POSTGRES_URL_VARIABLE, prepare_instance
from pipeline.settings import SettingError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv(POSTGRES_URL_VARIABLE, raising=False)
    return tmp_path / "data" / "dagster_home"


def test_default_instance_is_sqlite_in_the_data_directory_with_queued_runs(home):
    assert prepare_instance() == home.resolve()
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_coordinator) is QueuedRunCoordinator
        assert instance.run_storage.__class__.__name__ == "SqliteRunStorage"
        assert str(home) in instance.root_directory
        limits = instance.get_concurrency_config()
        assert limits.run_queue_config.max_concurrent_runs == 1
        assert {limit["key"] for limit in limits.run_queue_config.tag_concurrency_limits} == {
            "pipeline/writes",
            "dagster/partition",
        }
        assert instance.run_retries_max_retries == 1
        assert instance.run_monitoring_enabled


def test_postgres_storage_from_a_heroku_database_url_keeps_the_password_out_of_dagster_yaml(
    home, postgres_url, monkeypatch
):
    password_marker = "pw-not-needed-with-trust-auth"
    heroku_url = postgres_url.replace("postgresql://postgres@", f"postgres://postgres:{password_marker}@")
    monkeypatch.setenv("DATABASE_URL", heroku_url)
    prepare_instance()
    text = (home / "dagster.yaml").read_text()
    assert password_marker not in text and "127.0.0.1" not in text
    assert yaml.safe_load(text)["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}}
    with dg.DagsterInstance.get() as instance:
        instance.upgrade()
        assert instance.run_storage.__class__.__name__ == "PostgresRunStorage"
        assert instance.compute_log_manager.__class__.__name__ == "NoOpComputeLogManager"
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        assert instance.get_run_by_id(run.run_id) is not None


def test_concurrency_setting_must_be_a_positive_whole_number(home, monkeypatch):
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT_RUNS", "0")
    with pytest.raises(SettingError, match="PIPELINE_MAX_CONCURRENT_RUNS must be at least 1"):
        prepare_instance()
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT_RUNS", "3")
    prepare_instance()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
