"""The answers asset and its checks: ``dg.materialize()`` on the real state store (SQLite and PostgreSQL) and files.

The chat model is :class:`~tests.answer.citing_chat.CitingChat`, a real ``ChatModel`` behind a
``ChatResource``; the context sets are published into the store as ``ranked_context_sets`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipeline.defs import answers as answers_module
from pipeline.defs.endpoints import ChatEndpoint
from pipeline.defs.resources import ChatResource, PipelineFilesResource, StateStoreResource, build_resources
from pipeline.settings import SettingError
from pipeline.store.state import StateStore, sqlite_url
from tests.answer.citing_chat import CitingChat
from tests.answer.test_answering import COLOUR, EMPTY, POOL, _context_set

# The asset and its checks alone: the module also names ranked_context_sets, which the tests publish themselves.
ASSETS = [
    answers_module.answers,
    answers_module.answers_cite_their_own_passages,
    answers_module.answers_match_their_context_sets,
    answers_module.answer_tokens_within_budget,
]
CHECKS = ("answers_cite_their_own_passages", "answers_match_their_context_sets", "answer_tokens_within_budget")
# The chat model each CitingChatResource answers with, by name: Dagster builds the resource from its config.
CHATS: dict[str, CitingChat] = {}


class CitingChatResource(ChatResource):
    """A ChatResource whose chat model is the CitingChat registered under ``chat_name``."""

    chat_name: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._chat = CHATS[self.chat_name]


@dataclass
class Deployment:
    data_dir: Path
    store: StateStore
    chat: CitingChat
    resources: dict[str, dg.ConfigurableResource]
    instance: dg.DagsterInstance

    def publish(self, run_id: str, *sets) -> None:
        self.store.context_sets.save(run_id, list(sets), keep_runs=30)

    def answer(self, **options) -> dg.ExecuteInProcessResult:
        return dg.materialize(ASSETS, resources=self.resources, instance=self.instance, **options)

    def check_alone(self, name: str) -> dg.AssetCheckEvaluation:
        selection = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("answers"), name))
        [evaluation] = self.answer(selection=selection).get_asset_check_evaluations()
        return evaluation

    def published_lines(self) -> list[dict]:
        return [json.loads(line) for line in (self.data_dir / "answers.jsonl").read_text().splitlines()]


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request, tmp_path) -> Iterator[Deployment]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = StateStore(url)
    chat = CHATS[request.node.name] = CitingChat()
    resources = {
        "files": PipelineFilesResource(
            data_dir=str(tmp_path), sources_path="unused", queries_path="unused", labelled_queries_path="unused"
        ),
        "state_store": StateStoreResource(
            data_dir=str(tmp_path), database_url=None if request.param == "sqlite" else url
        ),
        "chat": CitingChatResource(chat_name=request.node.name),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        deployment = Deployment(tmp_path, store, chat, resources, instance)
        deployment.publish("context-1", POOL, COLOUR, EMPTY)
        yield deployment
    del CHATS[request.node.name]
    store.dispose()


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_answers_are_published_to_the_file_and_the_table_and_pass_their_checks(deployment):
    result = deployment.answer()

    metadata = _metadata(result)
    assert (metadata["answered"], metadata["not_answered"], metadata["failed"]) == (1, 2, 0)
    assert (metadata["completions_requested"], metadata["cache_hits"]) == (2, 0)
    assert metadata["tokens_spent"] == metadata["prompt_tokens"] + metadata["completion_tokens"] > 0
    assert metadata["latency_samples"] == 2 and metadata["model"] == "citing-test-model@127.0.0.1"
    assert "Sources: [2] <https://docs.test/page-2>" in metadata["preview"]
    lines = deployment.published_lines()
    assert lines == [answer.published() for answer in deployment.store.answers.latest().values()]
    assert [line["query_id"] for line in lines] == ["pool", "colour", "empty"]
    assert lines[0]["citations"] == [
        {"number": 2, "chunk_id": POOL.passages[1]["chunk_id"], "url": POOL.passages[1]["url"]}
    ]
    assert not list(deployment.data_dir.glob("*.tmp"))
    checks = _checks(result)
    assert set(checks) == set(CHECKS) and all(check.passed for check in checks.values())


def test_an_unchanged_refresh_spends_no_tokens(deployment):
    deployment.answer()
    deployment.publish("context-2", POOL, COLOUR, EMPTY)  # the nightly refresh: the same context sets again
    deployment.chat.requests.clear()

    result = deployment.answer()

    metadata = _metadata(result)
    assert (metadata["tokens_spent"], metadata["completions_requested"], metadata["cache_hits"]) == (0, 0, 2)
    assert metadata["latency_p50_ms"] is None and deployment.chat.requests == []
    assert all(check.passed for check in _checks(result).values())
    assert _checks(result)["answer_tokens_within_budget"].metadata["tokens_spent"].value == 0


def test_a_question_that_fails_is_published_as_failed_with_no_text_and_the_others_are_answered(deployment):
    deployment.chat.failing = {POOL.query}

    result = deployment.answer()

    assert _metadata(result)["failed"] == 1
    pool = deployment.published_lines()[0]
    assert (pool["answered"], pool["answer"], pool["error"], pool["citations"]) == (False, None, "http_500", [])
    assert deployment.store.answers.latest()["pool"].failed
    citations = _checks(result)["answers_cite_their_own_passages"]
    assert citations.passed and citations.metadata["failed"].value == 1


def test_a_rejected_key_fails_the_asset_at_once_and_keeps_the_published_answers(deployment):
    deployment.answer()
    before = deployment.published_lines()
    deployment.chat.key_rejected = True  # a rotated key, found out by the one set that changed
    deployment.publish("context-2", POOL, _context_set("colour", COLOUR.query, "The logo colour is teal."), EMPTY)

    result = deployment.answer(raise_on_error=False)

    assert not result.success
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert "rejected the key" in failure.step_failure_data.error.message
    # The earlier answers stay published, in the file as in the view, except the one whose context set changed.
    assert list(deployment.store.answers.latest()) == ["pool", "empty"]
    assert deployment.published_lines() == [before[0], before[2]]


def test_an_answer_is_never_published_beside_a_context_set_it_was_not_computed_from(deployment):
    deployment.answer()
    teal = _context_set("colour", COLOUR.query, "The logo colour is teal.")
    deployment.publish("context-2", POOL, teal, EMPTY)  # published after the answers, which did not run again

    assert list(deployment.store.answers.latest()) == ["pool", "empty"]
    stale = deployment.check_alone("answers_match_their_context_sets")
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.metadata["answers_of_replaced_context_sets"].value == 1
    assert stale.metadata["published_for_another_context_set"].value == 0

    deployment.chat.requests.clear()
    result = deployment.answer()
    [(_system, user)] = deployment.chat.requests  # only the replaced set is asked again
    assert "teal" in user["content"]
    assert deployment.store.answers.latest()["colour"].answer == "The logo colour is teal. [1]"
    assert _checks(result)["answers_match_their_context_sets"].passed


def test_tokens_over_the_budget_warn(deployment, monkeypatch):
    monkeypatch.setattr(answers_module, "ANSWER_TOKENS_BUDGET", 10)

    budget = _checks(deployment.answer())["answer_tokens_within_budget"]

    assert not budget.passed and budget.severity == dg.AssetCheckSeverity.WARN
    assert budget.metadata["budget"].value == 10 and budget.metadata["tokens_spent"].value > 10


def test_no_configured_secret_reaches_the_chat_model_or_the_published_answers(deployment, monkeypatch):
    key = "inf-5b0e2d9c4a7f1836"
    monkeypatch.setenv("INFERENCE_KEY", key)
    deployment.publish(
        "context-2", _context_set("pool", "How do I set the key for the pool?", f"Set key {key} for the pool.")
    )

    deployment.answer()

    assert key not in json.dumps(deployment.chat.requests) and "[REDACTED]" in json.dumps(deployment.chat.requests)
    assert key not in (deployment.data_dir / "answers.jsonl").read_text()


# -- the chat endpoint from the environment ------------------------------------------------------

INFERENCE = {
    "INFERENCE_URL": "https://us.inference.heroku.com",
    "INFERENCE_KEY": "inf-key-1f2e3d",
    "INFERENCE_MODEL_ID": "claude-4-5-haiku",
}


@pytest.fixture
def inference_environment(monkeypatch):
    """Sets the given INFERENCE_* variables and unsets the others."""

    def set_only(*names: str) -> None:
        for name, value in INFERENCE.items():
            if name in names:
                monkeypatch.setenv(name, value)
            else:
                monkeypatch.delenv(name, raising=False)

    return set_only


def test_the_chat_endpoint_comes_from_the_environment_all_or_none_and_its_key_is_never_shown(inference_environment):
    inference_environment()
    assert build_resources()["chat"].endpoint is None

    inference_environment(*INFERENCE)
    resource = build_resources()["chat"]
    assert resource.endpoint == ChatEndpoint(*INFERENCE.values())
    assert INFERENCE["INFERENCE_KEY"] not in repr(resource) + repr(resource.endpoint)

    inference_environment("INFERENCE_URL", "INFERENCE_KEY")
    with pytest.raises(SettingError, match="INFERENCE_MODEL_ID is not set, but INFERENCE_URL and INFERENCE_KEY are"):
        build_resources()


def test_run_config_cannot_name_the_chat_endpoint(deployment):
    with pytest.raises(dg.DagsterInvalidConfigError):
        deployment.answer(run_config={"resources": {"chat": {"config": {"endpoint": {"url": "https://elsewhere"}}}}})
