"""``pipeline rerank-service``: fault injection from flags, and a log that never shows the bearer token."""

from __future__ import annotations

import os
import sys
import time

import httpx
import pytest

from pipeline.cli import build_parser, main, service_config
from tests.commands import free_port, start_service_command, stop_service_command

KEY = "inf-cli-3e8a1f5c7b9d"
WRONG_KEY = "inf-cli-wrong-0a0a0a0a"
MODEL = "cohere-rerank-3-5"
DOCUMENTS = ["Connection pooling reuses connections.", "Bananas are yellow."]


def test_every_fault_flag_reaches_the_service_config(monkeypatch):
    monkeypatch.setenv("RERANK_KEY", KEY)
    arguments = build_parser().parse_args(
        [
            "rerank-service",
            "--requests-per-minute", "250",
            "--omit-retry-after",
            "--error-rate", "0.05",
            "--timeout-rate", "0.01",
            "--hang-seconds", "2.5",
            "--malformed-rate", "0.02",
            "--latency", "0.1",
            "--seed", "7",
            "--test-mode",
            "--allowed-models", "amazon-rerank-1-0, cohere-rerank-3-5",
            "--max-documents", "100",
        ]
    )  # fmt: skip
    config = service_config(arguments)

    assert (config.requests_per_minute, config.omit_retry_after, config.error_rate) == (250, True, 0.05)
    assert (config.timeout_rate, config.hang_seconds, config.malformed_rate) == (0.01, 2.5, 0.02)
    assert (config.added_latency_seconds, config.seed, config.test_mode) == (0.1, 7, True)
    assert config.allowed_models == ("amazon-rerank-1-0", "cohere-rerank-3-5")
    assert config.max_documents == 100 and config.api_key == KEY


def test_unset_flags_keep_the_service_defaults(monkeypatch):
    monkeypatch.setenv("RERANK_KEY", KEY)
    config = service_config(build_parser().parse_args(["rerank-service"]))

    assert config.requests_per_minute is None and config.allowed_models is None and not config.test_mode
    assert (config.error_rate, config.hang_seconds, config.max_documents) == (0.0, 30.0, 1000)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--error-rate", "1.5"], "--error-rate must be within [0, 1], got 1.5"),
        (["--allowed-models", "gpt-rerank"], "--allowed-models lists unknown models ['gpt-rerank']"),
        (["--max-documents", "5000"], "--max-documents must be within [1, 1000], got 5000"),
        (["--requests-per-minute", "0"], "--requests-per-minute must be at least 1, got 0"),
    ],
)
def test_a_bad_flag_value_is_named_before_anything_starts(monkeypatch, capsys, flags, message):
    monkeypatch.setenv("RERANK_KEY", KEY)
    with pytest.raises(SystemExit) as exited:
        main(["rerank-service", *flags])

    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_key_with_a_stray_line_break_is_named_before_the_service_starts(monkeypatch):
    monkeypatch.setenv("RERANK_KEY", KEY + "\n")
    with pytest.raises(ValueError) as refused:
        service_config(build_parser().parse_args(["rerank-service"]))

    assert "RERANK_KEY contains a line feed (\\n) at its end" in str(refused.value)
    assert KEY not in str(refused.value)


def test_the_command_serves_the_configured_faults_and_never_logs_the_token(tmp_path):
    port = free_port()
    command = [
        sys.executable, "-m", "pipeline.cli", "rerank-service", "--port", str(port),
        "--requests-per-minute", "3", "--omit-retry-after", "--test-mode",
        "--allowed-models", MODEL, "--max-documents", "2", "--latency", "0.2",
    ]  # fmt: skip
    environment = {**os.environ, "RERANK_KEY": KEY, "PIPELINE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    environment.pop("DATABASE_URL", None)
    url = f"http://127.0.0.1:{port}"
    process = start_service_command(command, environment, url)
    try:

        def post(key: str = KEY, model: str = MODEL, documents=DOCUMENTS, fault: str | None = None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}", **({"X-Fault": fault} if fault else {})}
            body = {"model": model, "query": "connection pooling", "documents": documents}
            return httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=10)

        started = time.monotonic()
        first = post()
        assert first.status_code == 200 and time.monotonic() - started >= 0.2  # --latency
        assert post(fault="500").status_code == 500  # --test-mode
        assert post(model="amazon-rerank-1-0").status_code == 403  # --allowed-models
        assert post(key=WRONG_KEY).status_code == 401
        assert post(documents=[*DOCUMENTS, "a third"]).status_code == 400  # --max-documents
        assert post().status_code == 200
        limited = post()  # the fourth admitted request in a minute: --requests-per-minute 3
        assert limited.status_code == 429 and "retry-after" not in limited.headers  # --omit-retry-after
    finally:
        output = stop_service_command(process)

    assert f"rerank 200 model={MODEL} documents=2" in output
    assert "rerank 401 model=None" in output and "fault=500" in output and "rerank 429" in output
    assert KEY not in output and WRONG_KEY not in output
