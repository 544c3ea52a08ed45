"""``pipeline chat-service``: its flags reach its config, and the running command says it is a stand-in."""

from __future__ import annotations

import os
import sys

import httpx

from pipeline.cli import build_parser, service_config
from pipeline.local import ChatServiceConfig
from pipeline.stand_ins import chat_key
from tests.answer.passages import ANSWERED, NOT_COVERED, messages
from tests.chat_stand_in import MODEL
from tests.commands import free_port, start_service_command, stop_service_command

WRONG_KEY = "inf-cli-wrong-0c0c0c0c"


def test_the_chat_flags_reach_its_config():
    arguments = build_parser().parse_args(
        ["chat-service", "--tokens-per-minute", "800000", "--requests-per-minute", "150", "--test-mode"]
    )
    config = service_config(arguments)

    assert isinstance(config, ChatServiceConfig) and config.api_key == chat_key()
    assert (config.tokens_per_minute, config.requests_per_minute, config.test_mode) == (800_000, 150, True)
    assert arguments.port == 8767
    assert service_config(build_parser().parse_args(["chat-service"])) == ChatServiceConfig(api_key=chat_key())


def test_the_command_answers_extractively_and_never_logs_the_key_or_the_texts(tmp_path):
    key = chat_key()
    port = free_port()
    command = [sys.executable, "-m", "pipeline.cli", "chat-service", "--port", str(port), "--test-mode"]
    environment = {**os.environ, "PIPELINE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"
    process = start_service_command(command, environment, url)
    try:

        def post(question: str, key: str = key, fault: str | None = None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}", **({"X-Fault": fault} if fault else {})}
            body = {"model": MODEL, "messages": messages(question), "max_completion_tokens": 200}
            return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)

        answered = post(ANSWERED)
        assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"].endswith("[1]")
        assert "not Heroku Inference" in answered.headers["x-local-stand-in"]
        assert post(NOT_COVERED).json()["choices"][0]["message"]["content"].startswith("NOT IN THE DOCS:")
        assert post(ANSWERED, key=WRONG_KEY).status_code == 401
        assert post(ANSWERED, fault="500").status_code == 500
    finally:
        output = stop_service_command(process)

    assert (
        "local chat stand-in (/v1/chat/completions), not Heroku Inference: answers from extractive-answerer" in output
    )
    assert f"chat 200 model={MODEL} messages=2 max_completion_tokens=200" in output
    assert "chat 401 model=None" in output and "fault=500" in output
    assert key not in output and WRONG_KEY not in output and "pool size" not in output
