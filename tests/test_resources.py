"""Endpoints and credentials come from the environment only, and are checked when a run sets its resources up."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline.defs.endpoints import RerankEndpoint
from pipeline.defs.resources import ChromaResource, ChromaServer, StateStoreResource, build_resources

DATABASE_URL = "postgresql://pipeline:db-pw-0a9c7e@127.0.0.1:5432/test"
CHROMA_TOKEN = "chroma-tok-4e2b81"
RERANK_KEY = "inf-env-key-93d1c5"


@dg.asset
def uses_the_stores(state_store: StateStoreResource, chroma: ChromaResource) -> None:
    """Needs both resources set up; opens neither (no server listens in these tests)."""


def _materialize(resources: dict, run_config: dict | None = None, **options: object) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [uses_the_stores], resources=resources, run_config=run_config, instance=instance, **options
        )


@pytest.mark.parametrize(
    ("resource", "field", "value"),
    [
        ("state_store", "database_url", "postgresql://someone:pw@elsewhere.example/db"),
        ("chroma", "host", "elsewhere.example"),
        ("chroma", "token", "their-token"),
        ("chroma", "server", {"host": "elsewhere.example"}),
    ],
)
def test_run_config_cannot_set_where_the_stores_live_or_their_credentials(tmp_path, resource, field, value):
    resources = {
        "state_store": StateStoreResource(data_dir=str(tmp_path)),
        "chroma": ChromaResource(data_dir=str(tmp_path)),
    }
    with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}"'):
        _materialize(resources, {"resources": {resource: {"config": {field: value}}}})


@pytest.mark.parametrize(
    ("resources", "variable", "secret"),
    [
        (
            lambda data_dir: {
                "state_store": StateStoreResource(data_dir=data_dir, database_url=DATABASE_URL + "\n"),
                "chroma": ChromaResource(data_dir=data_dir),
            },
            "DATABASE_URL",
            "db-pw-0a9c7e",
        ),
        (
            lambda data_dir: {
                "state_store": StateStoreResource(data_dir=data_dir),
                "chroma": ChromaResource(
                    data_dir=data_dir, server=ChromaServer("127.0.0.1", token=CHROMA_TOKEN + "\r")
                ),
            },
            "CHROMA_TOKEN",
            CHROMA_TOKEN,
        ),
    ],
    ids=["DATABASE_URL", "CHROMA_TOKEN"],
)
def test_a_secret_with_a_stray_line_break_fails_setup_naming_the_variable(tmp_path, resources, variable, secret):
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [uses_the_stores], resources=resources(str(tmp_path)), instance=instance, raise_on_error=False
        )
        logged = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))

    assert not result.success
    assert f"{variable} contains a " in logged
    assert secret not in logged


def test_build_resources_takes_endpoints_and_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("RERANK_URL", "https://us.inference.heroku.com")
    monkeypatch.setenv("RERANK_KEY", RERANK_KEY)
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("CHROMA_HOST", "chroma.example")
    monkeypatch.setenv("CHROMA_TOKEN", CHROMA_TOKEN)
    resources = build_resources()

    assert resources["rerank"].model_id == "cohere-rerank-3-5"
    assert resources["rerank"].endpoint == RerankEndpoint(
        "https://us.inference.heroku.com", RERANK_KEY, "cohere-rerank-3-5"
    )
    assert resources["state_store"].database_url == DATABASE_URL
    assert resources["chroma"].server == ChromaServer("chroma.example", token=CHROMA_TOKEN)
    shown = " ".join(repr(resource) for resource in resources.values())
    shown += repr(resources["rerank"].endpoint) + repr(resources["chroma"].server)
    for secret in (RERANK_KEY, "db-pw-0a9c7e", CHROMA_TOKEN):
        assert secret not in shown


def test_a_handle_is_built_at_setup_shared_by_the_process_and_released_at_teardown(tmp_path):
    resource = StateStoreResource(data_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="StateStoreResource is used before Dagster set it up"):
        resource.get()
    with dg.build_resources({"state_store": resource}) as first:
        store = first.state_store.get()
    with dg.build_resources({"state_store": resource}) as second:
        assert second.state_store.get() is store
    with pytest.raises(RuntimeError, match="before Dagster set it up"):
        second.state_store.get()
