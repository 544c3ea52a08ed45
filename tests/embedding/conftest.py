"""A minimal ``/v1/embeddings`` server on 127.0.0.1 for the client's tests, and clients of it on a fake clock.

The server checks what the contract fixes (bearer, path, model, body) and answers from a
deterministic function of each input and its ``input_type``, so a test can compute the vectors it
must get. It counts tokens its own way (:func:`server_tokens`, which the client does not know),
reports them in ``usage``, and, given a tokens-per-minute limit, enforces it over a sliding
window of the test's clock with 429s and ``x-ratelimit-*-tokens`` headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from pipeline.embedding.contract import (
    EMBEDDINGS_PATH,
    ENCODING_FORMATS,
    INPUT_TYPES,
    MAX_INPUT_CHARACTERS,
    MAX_INPUTS_PER_REQUEST,
)
from pipeline.embedding.remote import HerokuEmbedder
from tests.clock import FakeClock, clients_on_clock

# Distinctive so that a leak is unmistakable when logs and messages are searched for it.
API_KEY = "emb-test-5d2a9f3c7e1b48a6"
MODEL = "cohere-embed-multilingual"
DIMENSIONS = 16
WINDOW_SECONDS = 60.0

# (status, JSON body, headers) a test's fault hook answers a request with instead of the contract's answer.
Answer = tuple[int, Any, dict[str, str]]


def _direction(label: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=DIMENSIONS)


def server_vector(text: str, input_type: str) -> np.ndarray:
    """What the server embeds ``text`` as: mostly the text's direction, a little the input type's; not unit length."""
    return 3.0 * _direction(text) + 0.3 * _direction(f"{input_type}\0{text}")


def expected_vector(text: str, input_type: str) -> np.ndarray:
    vector = server_vector(text, input_type)
    return vector / np.linalg.norm(vector)


def server_tokens(text: str) -> int:
    """The server's count for one input, unknown to the client: about 3.5 characters a token, plus two."""
    return int(len(text) / 3.5) + 2


def encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(value) for value in vector]


@dataclass(frozen=True)
class Received:
    """A request that passed the contract's checks, and the test clock's time when it arrived."""

    input: tuple[str, ...]
    input_type: str
    encoding_format: str
    embedding_type: str
    at: float


class ContractServer:
    """``POST /v1/embeddings`` on 127.0.0.1 as the contract describes it (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.received: list[Received] = []
        self.fault: Callable[[Received], Answer | None] | None = None
        self.tokens_per_minute: int | None = None
        self.report_usage = True
        self.rate_limited = 0
        # (arrival, tokens) of the accepted requests, and of another process's (spend()).
        self.window: list[tuple[float, int]] = []
        self._rng = random.Random(5)
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def spend(self, tokens: int) -> None:
        """Another process's request on the same model, counted in the window from now."""
        with self._lock:
            self.window.append((self.clock(), tokens))

    def tokens_in_window(self, now: float) -> int:
        return sum(tokens for at, tokens in self.window if at > now - WINDOW_SECONDS)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, headers: Any, path: str, raw_body: bytes) -> Answer:
        if path != EMBEDDINGS_PATH:
            return 404, {"message": f"no route {path}"}, {}
        if headers.get("authorization") != f"Bearer {API_KEY}":
            return 401, {"message": "invalid api key"}, {}
        body = json.loads(raw_body)
        if body.get("model") != MODEL:
            return 404, {"message": f"model {body.get('model')!r} not found"}, {}
        problem = _contract_problem(body)
        if problem:
            return 400, {"message": problem}, {}
        request = Received(
            tuple(body["input"]),
            body.get("input_type", ""),
            body.get("encoding_format", "raw"),
            body.get("embedding_type", "float"),
            self.clock(),
        )
        with self._lock:
            self.received.append(request)
        faulty = self.fault(request) if self.fault is not None else None
        if faulty is not None:
            return faulty
        return self._embedded(request)

    def _embedded(self, request: Received) -> Answer:
        tokens = sum(server_tokens(text) for text in request.input)
        headers: dict[str, str] = {}
        with self._lock:
            if self.tokens_per_minute is not None:
                used = self.tokens_in_window(request.at)
                if used + tokens > self.tokens_per_minute:
                    self.rate_limited += 1
                    return 429, {"message": "rate limit exceeded"}, {}
                self.window.append((request.at, tokens))
                headers = {
                    "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
                    "x-ratelimit-remaining-tokens": str(self.tokens_per_minute - used - tokens),
                }
            order = list(range(len(request.input)))
            self._rng.shuffle(order)  # the contract orders answers by nothing: index says which input
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": encoded(server_vector(request.input[index], request.input_type), request.encoding_format),
            }
            for index in order
        ]
        payload: dict[str, Any] = {"object": "list", "data": data, "model": MODEL}
        if self.report_usage:
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, payload, headers

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw_body = self.rfile.read(int(self.headers["content-length"]))
                status, payload, headers = server.answer(self.headers, self.path, raw_body)
                encoded_payload = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(encoded_payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(encoded_payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _contract_problem(body: dict[str, Any]) -> str | None:
    inputs = body.get("input")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(text, str) for text in inputs):
        return "input must be a non-empty array of strings"
    if len(inputs) > MAX_INPUTS_PER_REQUEST:
        return f"too many inputs: at most {MAX_INPUTS_PER_REQUEST}"
    if any(len(text) > MAX_INPUT_CHARACTERS for text in inputs):
        return f"an input is longer than {MAX_INPUT_CHARACTERS} characters"
    if body.get("input_type", "search_document") not in INPUT_TYPES:
        return f"unknown input_type {body.get('input_type')!r}"
    if body.get("encoding_format", "raw") not in ENCODING_FORMATS:
        return f"unknown encoding_format {body.get('encoding_format')!r}"
    if body.get("embedding_type", "float") != "float":
        return f"embedding_type {body.get('embedding_type')!r} is not served here"
    return None


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def contract_server(fake_clock: FakeClock) -> Iterator[ContractServer]:
    server = ContractServer(fake_clock)
    yield server
    server.close()


@pytest.fixture
def make_embedder(contract_server: ContractServer, fake_clock: FakeClock) -> Iterator[Callable[..., HerokuEmbedder]]:
    """Embedders of ``contract_server`` that sleep on ``fake_clock`` (backoffs and pacing are recorded, not waited)."""
    # Limits far above what these tests send, so fake_clock.sleeps holds the retry delays alone;
    # the pacing tests set their own.
    yield from clients_on_clock(
        HerokuEmbedder,
        fake_clock,
        base_url=contract_server.url,
        api_key=API_KEY,
        model_id=MODEL,
        requests_per_minute=600_000,
        tokens_per_minute=100_000_000,
    )
