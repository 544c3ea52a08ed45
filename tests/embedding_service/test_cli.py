"""``pipeline embedding-service``: limits and faults from flags, --fast vectors, and a log that never shows the key."""

from __future__ import annotations

import os
import sys
import time

import httpx
import numpy as np
import pytest

from pipeline.cli import build_parser, main, service_config
from pipeline.embedding import MiniLMEmbedder
from pipeline.local import EmbeddingServiceConfig, HashedVectors
from pipeline.local.embedding_service import count_tokens
from pipeline.stand_ins import embedding_key, stand_in_vectors
from tests.commands import free_port, start_service_command, stop_service_command
from tests.embedding_service.conftest import MODEL, vectors_of

KEY = "inf-cli-embed-6b1d4f8a2c"
WRONG_KEY = "inf-cli-wrong-0b0b0b0b"
TEN_TOKENS = "one two three four five six seven eight nine ten"


def test_the_embedding_flags_reach_its_config():
    # The flags both stand-ins share are parsed by one function, checked in full for rerank-service.
    arguments = build_parser().parse_args(
        ["embedding-service", "--tokens-per-minute", "800000", "--requests-per-minute", "500", "--test-mode"]
    )
    config = service_config(arguments)

    assert isinstance(config, EmbeddingServiceConfig) and config.api_key == embedding_key()
    assert (config.tokens_per_minute, config.requests_per_minute, config.test_mode) == (800_000, 500, True)
    assert service_config(
        build_parser().parse_args(["embedding-service", "--allowed-models", MODEL])
    ).allowed_models == (MODEL,)


def test_unset_flags_keep_the_service_defaults():
    config = service_config(build_parser().parse_args(["embedding-service"]))

    assert config == EmbeddingServiceConfig(api_key=embedding_key())
    assert build_parser().parse_args(["embedding-service"]).port == 8766


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tokens-per-minute", "0"], "--tokens-per-minute must be at least 1, got 0"),
        (["--requests-per-minute", "0"], "--requests-per-minute must be at least 1, got 0"),
        (["--allowed-models", "cohere-rerank-3-5"], "--allowed-models lists unknown models ['cohere-rerank-3-5']"),
        (["--dimensions", "1024"], "--dimensions applies to --fast only"),
    ],
)
def test_a_bad_flag_value_is_named_before_anything_starts(capsys, flags, message):
    with pytest.raises(SystemExit) as exited:
        main(["embedding-service", *flags])

    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_rerank_only_flags_are_not_embedding_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embedding-service", "--max-documents", "10"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rerank-service", "--tokens-per-minute", "10"])


def test_fast_means_hashed_vectors_and_otherwise_the_local_model():
    assert isinstance(stand_in_vectors(fast=False), MiniLMEmbedder)
    fast = stand_in_vectors(fast=True, dimensions=1024)
    assert isinstance(fast, HashedVectors) and fast.dimensions == 1024


def test_the_command_serves_the_configured_limits_and_faults_and_never_logs_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDING_KEY", KEY)
    key = embedding_key()  # EMBEDDING_KEY once it is a setting, the local default before
    port = free_port()
    command = [
        sys.executable, "-m", "pipeline.cli", "embedding-service", "--port", str(port), "--fast",
        "--requests-per-minute", "4", "--tokens-per-minute", "25", "--omit-retry-after", "--test-mode",
        "--latency", "0.2",
    ]  # fmt: skip
    environment = {**os.environ, "PIPELINE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"
    process = start_service_command(command, environment, url)
    try:

        def post(texts: list[str], key: str = key, fault: str | None = None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}", **({"X-Fault": fault} if fault else {})}
            body = {"model": MODEL, "input": texts, "input_type": "search_document"}
            return httpx.post(f"{url}/v1/embeddings", json=body, headers=headers, timeout=10)

        started = time.monotonic()
        first = post(["alpha", TEN_TOKENS])
        assert first.status_code == 200 and time.monotonic() - started >= 0.2  # --latency
        assert np.array_equal(vectors_of(first), HashedVectors().embed(["alpha", TEN_TOKENS]))  # --fast
        assert "hashed text" in first.headers["x-local-stand-in"]
        assert post(["beta"], fault="500").status_code == 500  # --test-mode
        assert post(["beta"], key=WRONG_KEY).status_code == 401
        limited = post([TEN_TOKENS, TEN_TOKENS])  # 10 + 20 (and a few more) > 25: --tokens-per-minute
        assert limited.status_code == 429 and "retry-after" not in limited.headers  # --omit-retry-after
        assert limited.headers["x-ratelimit-limit-tokens"] == "25"
        assert post(["gamma"]).status_code == 200  # the third admitted request
        assert post(["delta"]).status_code == 200
        too_often = post(["epsilon"])
        assert too_often.status_code == 429 and "4 requests per minute" in too_often.json()["message"]
    finally:
        output = stop_service_command(process)

    assert "local embeddings stand-in (/v1/embeddings), not Heroku Inference: vectors from hashed text" in output
    tokens = count_tokens(["alpha", TEN_TOKENS])
    assert (
        f"embeddings 200 model={MODEL} inputs=2 input_type=search_document encoding_format=raw tokens={tokens}"
        in output
    )
    assert "embeddings 401 model=None" in output and "fault=500" in output and "embeddings 429" in output
    assert key not in output and WRONG_KEY not in output and TEN_TOKENS not in output
