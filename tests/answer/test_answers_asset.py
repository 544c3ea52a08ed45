"""The answers asset and its checks: ``dg.materialize()`` on the real state store (SQLite and PostgreSQL) and files.

The chat model is the one attached ``--as INFERENCE``: the INFERENCE_* variables point at the local chat
stand-in on loopback, so answers go through ``HerokuChatModel`` over HTTP and the stand-in's request log
(its counted tokens) shows what was spent. The context sets are published into the store as
``ranked_context_sets`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipeline.answer.extractive import EXTRACTIVE_MODEL, ExtractiveChatModel
from pipeline.answer.prompt import NOT_IN_THE_DOCS, build_messages, numbered_passages
from pipeline.defs import answers as answers_module
from pipeline.defs.endpoints import ChatEndpoint
from pipeline.defs.resources import PipelineFilesResource, StateStoreResource, build_resources
from pipeline.local import LocalChatService
from pipeline.settings import SettingError
from pipeline.store.state import StateStore, sqlite_url
from tests.answer.test_answering import EMPTY, _context_set
from tests.chat_stand_in import API_KEY, MODEL

# The asset and its checks alone: the module also names ranked_context_sets, which the tests publish themselves.
ASSETS = [
    answers_module.answers,
    answers_module.answers_cite_their_own_passages,
    answers_module.answers_match_their_context_sets,
    answers_module.answer_tokens_within_budget,
]
CHECKS = ("answers_cite_their_own_passages", "answers_match_their_context_sets", "answer_tokens_within_budget")
TIMEOUTS = "Timeouts are counted in milliseconds for every request."
SESSIONS = _context_set(
    "pool",
    "How many sessions does the connection pool hold?",
    TIMEOUTS,
    "The connection pool holds five sessions for each worker.",
)
LOGO = _context_set("colour", "Which colour is the company logo?", TIMEOUTS)
TEAL = _context_set("colour", LOGO.query, "The company logo colour is teal with a white border.")


def attach_chat_model(monkeypatch, url: str, key: str = API_KEY) -> None:
    """The config vars Heroku sets for a chat model attached ``--as INFERENCE``."""
    monkeypatch.setenv("INFERENCE_URL", url)
    monkeypatch.setenv("INFERENCE_KEY", key)
    monkeypatch.setenv("INFERENCE_MODEL_ID", MODEL)


@dataclass
class Deployment:
    data_dir: Path
    store: StateStore
    chat: LocalChatService
    resources: dict[str, dg.ConfigurableResource]
    instance: dg.DagsterInstance

    def publish(self, run_id: str, *sets) -> None:
        self.store.context_sets.save(run_id, list(sets), keep_runs=30)

    def reload_chat(self) -> None:
        """The chat resource as the code location builds it from the environment (after a config var changed)."""
        self.resources["chat"] = build_resources()["chat"]

    def answer(self, **options) -> dg.ExecuteInProcessResult:
        return dg.materialize(ASSETS, resources=self.resources, instance=self.instance, **options)

    def check_alone(self, name: str) -> dg.AssetCheckEvaluation:
        selection = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("answers"), name))
        [evaluation] = self.answer(selection=selection).get_asset_check_evaluations()
        return evaluation

    def published_lines(self) -> list[dict]:
        return [json.loads(line) for line in (self.data_dir / "answers.jsonl").read_text().splitlines()]

    def questions_asked(self) -> list[str]:
        """The user message of each request the chat endpoint answered."""
        return [dict(request.messages)["user"] for request in self.chat.requests if request.messages]

    def tokens_counted(self) -> int:
        """The tokens the chat endpoint counted for the completions it wrote (what Heroku would bill)."""
        return sum(
            request.prompt_tokens + request.completion_tokens
            for request in self.chat.requests
            if request.status == 200 and request.prompt_tokens is not None and request.completion_tokens is not None
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request, tmp_path, chat_service, monkeypatch) -> Iterator[Deployment]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = StateStore(url)
    attach_chat_model(monkeypatch, chat_service.url)
    resources = {
        "files": PipelineFilesResource(
            data_dir=str(tmp_path),
            sources_path="unused",
            queries_path="unused",
            labelled_queries_path="unused",
            unanswerable_queries_path="unused",
        ),
        "state_store": StateStoreResource(
            data_dir=str(tmp_path), database_url=None if request.param == "sqlite" else url
        ),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        deployment = Deployment(tmp_path, store, chat_service, resources, instance)
        deployment.reload_chat()
        deployment.publish("context-1", SESSIONS, LOGO, EMPTY)
        yield deployment
    store.dispose()


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_answers_from_the_attached_chat_model_are_published_to_the_file_and_the_table_and_pass_their_checks(
    deployment,
):
    result = deployment.answer()

    metadata = _metadata(result)
    assert (metadata["answered"], metadata["not_answered"], metadata["failed"]) == (1, 2, 0)
    assert (metadata["completions_requested"], metadata["cache_hits"]) == (2, 0)
    # What the run reports spending is what the endpoint counted.
    assert metadata["tokens_spent"] == metadata["prompt_tokens"] + metadata["completion_tokens"]
    assert metadata["tokens_spent"] == deployment.tokens_counted() > 0
    host = deployment.chat.url.removeprefix("http://")
    assert metadata["latency_samples"] == 2 and metadata["model"] == f"{MODEL}@{host}"
    assert "Sources: [2] <https://docs.test/page-2>" in metadata["preview"]
    lines = deployment.published_lines()
    assert lines == [answer.published() for answer in deployment.store.answers.latest().values()]
    assert [line["query_id"] for line in lines] == ["pool", "colour", "empty"]
    pool, colour, _empty = lines
    # The stand-in says who wrote the answer: the extractive answerer, whatever model the request named.
    assert (pool["answer"], pool["model"]) == (f"{SESSIONS.passages[1]['text']} [2]", EXTRACTIVE_MODEL)
    assert pool["citations"] == [
        {"number": 2, "chunk_id": SESSIONS.passages[1]["chunk_id"], "url": SESSIONS.passages[1]["url"]}
    ]
    assert colour["answer"].startswith(NOT_IN_THE_DOCS) and colour["citations"] == []
    assert not list(deployment.data_dir.glob("*.tmp"))
    checks = _checks(result)
    assert set(checks) == set(CHECKS) and all(check.passed for check in checks.values())


def test_an_unchanged_refresh_spends_no_tokens(deployment):
    deployment.answer()
    counted = deployment.tokens_counted()
    deployment.publish("context-2", SESSIONS, LOGO, EMPTY)  # the nightly refresh: the same context sets again

    result = deployment.answer()

    metadata = _metadata(result)
    assert (metadata["tokens_spent"], metadata["completions_requested"], metadata["cache_hits"]) == (0, 0, 2)
    assert metadata["latency_p50_ms"] is None
    assert len(deployment.chat.requests) == 2 and deployment.tokens_counted() == counted
    assert all(check.passed for check in _checks(result).values())
    assert _checks(result)["answer_tokens_within_budget"].metadata["tokens_spent"].value == 0


def test_without_a_chat_model_attached_the_extractive_answerer_answers_in_process(deployment, monkeypatch):
    for name in ("INFERENCE_URL", "INFERENCE_KEY", "INFERENCE_MODEL_ID"):
        monkeypatch.delenv(name)
    deployment.reload_chat()

    result = deployment.answer()

    metadata = _metadata(result)
    assert (metadata["model"], metadata["answered"], metadata["completions_requested"]) == (
        ExtractiveChatModel().model,
        1,
        2,
    )
    assert metadata["tokens_spent"] > 0 and deployment.chat.requests == []
    assert deployment.store.answers.latest()["pool"].answer == f"{SESSIONS.passages[1]['text']} [2]"
    assert all(check.passed for check in _checks(result).values())


def test_a_question_that_fails_is_published_as_failed_with_no_text_and_the_others_are_answered(deployment):
    [_system, user] = build_messages(SESSIONS.query, numbered_passages(SESSIONS.passages))
    deployment.chat.service.faults.add("500", times=None, text=user["content"])

    result = deployment.answer(run_config={"resources": {"chat": {"config": {"max_attempts": 2}}}})

    assert _metadata(result)["failed"] == 1
    assert [request.status for request in deployment.chat.requests].count(500) == 2  # retried, then given up
    pool, colour, _empty = deployment.published_lines()
    assert (pool["answered"], pool["answer"], pool["error"], pool["citations"]) == (False, None, "http_500", [])
    assert colour["error"] is None and colour["answer"].startswith(NOT_IN_THE_DOCS)
    assert deployment.store.answers.latest()["pool"].failed
    citations = _checks(result)["answers_cite_their_own_passages"]
    assert citations.passed and citations.metadata["failed"].value == 1


def test_a_rejected_key_fails_the_asset_at_once_and_keeps_the_published_answers(deployment, monkeypatch):
    deployment.answer()
    before = deployment.published_lines()
    attach_chat_model(monkeypatch, deployment.chat.url, key="inf-rotated-7d41c0")  # not the key the endpoint takes
    deployment.reload_chat()
    deployment.publish("context-2", SESSIONS, TEAL, EMPTY)  # found out by the one set that changed

    result = deployment.answer(raise_on_error=False)

    assert not result.success
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert "INFERENCE_KEY" in failure.step_failure_data.error.message
    assert "inf-rotated-7d41c0" not in failure.step_failure_data.error.message
    assert [request.status for request in deployment.chat.requests][-1] == 401
    # The earlier answers stay published, in the file as in the view, except the one whose context set changed.
    assert list(deployment.store.answers.latest()) == ["pool", "empty"]
    assert deployment.published_lines() == [before[0], before[2]]


def test_an_answer_is_never_published_beside_a_context_set_it_was_not_computed_from(deployment):
    deployment.answer()
    deployment.publish("context-2", SESSIONS, TEAL, EMPTY)  # published after the answers, which did not run again

    assert list(deployment.store.answers.latest()) == ["pool", "empty"]
    stale = deployment.check_alone("answers_match_their_context_sets")
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.metadata["answers_of_replaced_context_sets"].value == 1
    assert stale.metadata["published_for_another_context_set"].value == 0

    asked = len(deployment.questions_asked())
    result = deployment.answer()
    [user] = deployment.questions_asked()[asked:]  # only the replaced set is asked again
    assert "teal" in user
    assert deployment.store.answers.latest()["colour"].answer == f"{TEAL.passages[0]['text']} [1]"
    assert _checks(result)["answers_match_their_context_sets"].passed


def test_tokens_over_the_budget_warn(deployment, monkeypatch):
    monkeypatch.setattr(answers_module, "ANSWER_TOKENS_BUDGET", 10)

    budget = _checks(deployment.answer())["answer_tokens_within_budget"]

    assert not budget.passed and budget.severity == dg.AssetCheckSeverity.WARN
    assert budget.metadata["budget"].value == 10 and budget.metadata["tokens_spent"].value > 10


def test_no_configured_secret_reaches_the_chat_model_or_the_published_answers(deployment, monkeypatch):
    key = "rerank-5b0e2d9c4a7f1836"
    monkeypatch.setenv("RERANK_KEY", key)
    deployment.publish(
        "context-2",
        _context_set(
            "pool", "How do I set the key for the connection pool?", f"Set key {key} for the connection pool."
        ),
    )

    deployment.answer()

    [user] = deployment.questions_asked()
    assert key not in user and "[REDACTED]" in user
    assert API_KEY not in user
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
