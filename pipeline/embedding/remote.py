"""Embeddings through Heroku Inference ``POST {EMBEDDING_URL}/v1/embeddings`` (or a server that speaks its contract).

A thin layer over the inference core (:mod:`pipeline.inference`), which paces, retries and
redacts: this module batches inputs (at most 96 a request), refuses an input longer than the
endpoint accepts before anything is sent, says what each input is for (``search_document``
for passages, ``search_query`` for questions), estimates each request's tokens
(:mod:`pipeline.embedding.calibration`) and checks the answers (:mod:`pipeline.embedding.wire`).

Passages go out several requests at a time, so that pacing rather than the round trip bounds
throughput, and a batch that fails does not stop the others: :meth:`HerokuEmbedder.iter_document_batches`
hands on every batch that succeeded and then raises one :class:`EmbeddingBatchesFailed`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any, Unpack

import httpx
import numpy as np

from pipeline.embedding.calibration import TokenCalibration
from pipeline.embedding.contract import (
    EMBEDDINGS_PATH,
    ENCODING_FORMATS,
    KNOWN_MODELS,
    MAX_INPUT_CHARACTERS,
    MAX_INPUTS_PER_REQUEST,
    MODEL_REQUESTS_PER_MINUTE,
    MODEL_TOKENS_PER_MINUTE,
    SEARCH_DOCUMENT,
    SEARCH_QUERY,
)
from pipeline.embedding.errors import EMBEDDING_ERRORS, BatchFailure, EmbeddingBatchesFailed, InputTooLong
from pipeline.embedding.wire import EmbeddedBatch, parse_answer, rejection, request_body
from pipeline.inference import (
    CallTally,
    ClientOptions,
    EndpointClient,
    EndpointContract,
    InferenceClient,
    InferenceConfigurationError,
    InferenceError,
)

EMBEDDINGS = EndpointContract(
    name="embeddings",
    path=EMBEDDINGS_PATH,
    url_setting="EMBEDDING_URL",
    key_setting="EMBEDDING_KEY",
    model_setting="EMBEDDING_MODEL_ID",
    known_models=KNOWN_MODELS,
    errors=EMBEDDING_ERRORS,
)
# Requests in flight at once: a batch of 96 passages takes about a second on the wire, and at
# 500 requests a minute one must leave every 0.12 s, so one at a time could not reach the limit.
DEFAULT_CONCURRENT_REQUESTS = 4
# Base64 float32 is about a third of the bytes of the same vector as JSON numbers.
DEFAULT_ENCODING_FORMAT = "base64"
# An unknown model gets the lowest published limits: safer to under-use than to collect 429s.
FALLBACK_REQUESTS_PER_MINUTE = min(MODEL_REQUESTS_PER_MINUTE.values())
FALLBACK_TOKENS_PER_MINUTE = min(MODEL_TOKENS_PER_MINUTE.values())


@dataclass
class EmbeddingStats:
    """What the embedder has spent since it was built, across every call and thread."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    tokens_counted: int = 0
    batches: int = 0
    batches_failed: int = 0


class HerokuEmbedder(EndpointClient):
    """The :class:`~pipeline.embedding.protocol.Embedder` of a ``/v1/embeddings`` server; shareable between threads.

    ``model`` is ``<model id>@<host[:port]>``: the local stand-in serves the model names Heroku
    serves, from another model (or hashed vectors in its fast mode), and two Heroku regions
    need not serve the same weights either. Vectors are only comparable within one embedding
    space, so the stored vectors and the Chroma collection of one server are never taken for
    another's; the price is that moving to a new host embeds everything once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model_id: str,
        *,
        inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        concurrent_requests: int = DEFAULT_CONCURRENT_REQUESTS,
        encoding_format: str = DEFAULT_ENCODING_FORMAT,
        **options: Unpack[ClientOptions],
    ) -> None:
        if not 1 <= inputs_per_request <= MAX_INPUTS_PER_REQUEST:
            raise ValueError(
                f"inputs_per_request must be between 1 and {MAX_INPUTS_PER_REQUEST}, got {inputs_per_request}"
            )
        if concurrent_requests < 1:
            raise ValueError(f"concurrent_requests must be at least 1, got {concurrent_requests}")
        if encoding_format not in ENCODING_FORMATS:
            raise ValueError(f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}, got {encoding_format!r}")
        self._inference = InferenceClient(
            EMBEDDINGS,
            base_url,
            api_key,
            model_id,
            requests_per_minute=requests_per_minute
            or MODEL_REQUESTS_PER_MINUTE.get(model_id, FALLBACK_REQUESTS_PER_MINUTE),
            tokens_per_minute=tokens_per_minute or MODEL_TOKENS_PER_MINUTE.get(model_id, FALLBACK_TOKENS_PER_MINUTE),
            rejection=self._rejection,
            **options,
        )
        self.base_url = self._inference.base_url
        self.model_id = model_id
        self.model = f"{model_id}@{httpx.URL(self.base_url).netloc.decode('ascii')}"
        self.inputs_per_request = inputs_per_request
        self.concurrent_requests = concurrent_requests
        self.encoding_format = encoding_format
        self.calibration = TokenCalibration()
        self.stats = EmbeddingStats()
        self._dimensions: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HerokuEmbedder(base_url={self.base_url!r}, model={self.model_id!r})"

    @property
    def dimensions(self) -> int | None:
        """The length of the vectors the server returns; None until its first answer."""
        return self._dimensions

    # --- the Embedder protocol ----------------------------------------------------------------

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions as ``search_query`` vectors, ``(len(texts), dimensions)``; raises the first failure."""
        batches = self._batches(texts)
        vectors = [self._embed_batch([texts[p] for p in positions], SEARCH_QUERY) for positions in batches]
        if not vectors:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        return np.concatenate(vectors)

    def iter_document_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(positions, vectors)`` of passages embedded as ``search_document``, as each batch succeeds.

        Batches go out ``concurrent_requests`` at a time and come back in any order. One that
        fails (after its retries) does not stop the others; once every other batch is handed
        on, :class:`EmbeddingBatchesFailed` names the failed ones. A configuration error (401,
        403, 404, a rejected setting) stops sending: every further request would fail alike.
        """
        queue = deque(self._batches(texts))
        run = _BatchRun(len(queue))
        # Until a count from the server calibrates the token estimate, one request at a time: the
        # first is estimated at the prior, far above what it will count. A server whose answers
        # carry no count is then paced at the prior.
        while queue and not (self.calibration.calibrated or run.succeeded) and run.configuration_error is None:
            positions = queue.popleft()
            vectors = run.attempt(positions, partial(self._embed_batch, [texts[p] for p in positions], SEARCH_DOCUMENT))
            if vectors is not None:
                yield positions, vectors
        if queue and run.configuration_error is None:
            yield from self._concurrently(texts, queue, run)
        self._finish(run, queue)

    # --- internals --------------------------------------------------------------------------

    def _concurrently(
        self, texts: Sequence[str], queue: deque[list[int]], run: _BatchRun
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        in_flight: dict[Future[np.ndarray], list[int]] = {}
        with ThreadPoolExecutor(max_workers=self.concurrent_requests, thread_name_prefix="embeddings") as pool:
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < self.concurrent_requests and run.configuration_error is None:
                        positions = queue.popleft()
                        inputs = [texts[p] for p in positions]
                        in_flight[pool.submit(self._embed_batch, inputs, SEARCH_DOCUMENT)] = positions
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        positions = in_flight.pop(future)
                        vectors = run.attempt(positions, future.result)
                        if vectors is not None:
                            yield positions, vectors
            finally:
                # A caller that stops early: what has not started is dropped, what has is awaited.
                for future in in_flight:
                    future.cancel()

    @staticmethod
    def _finish(run: _BatchRun, unsent: deque[list[int]]) -> None:
        if run.configuration_error is not None:
            for positions in unsent:
                run.fail(positions, run.configuration_error)
        cause = run.configuration_error or run.first_error
        if cause is not None:
            raise EmbeddingBatchesFailed(run.failures, run.batches, cause) from cause

    def _batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Positions of ``texts`` in request-sized batches; every text checked before anything is sent."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        for position, text in enumerate(texts):
            if len(text) > MAX_INPUT_CHARACTERS:
                raise InputTooLong(position, len(text), MAX_INPUT_CHARACTERS)
        step = self.inputs_per_request
        return [list(range(start, min(start + step, len(texts)))) for start in range(0, len(texts), step)]

    def _embed_batch(self, inputs: list[str], input_type: str) -> np.ndarray:
        """One request, paced on its estimated tokens and retried by the core; its vectors in input order."""
        body = request_body(self.model_id, inputs, input_type, self.encoding_format)
        characters = sum(len(text) for text in inputs)
        estimate = self.calibration.estimate(characters)
        inference = self._inference
        budget = inference.limiter.token_budget
        if budget is not None:
            # One request never waits for more than a whole window's budget, however it is estimated.
            estimate = min(estimate, int(budget))
        tally = CallTally()

        def parse(payload: Any) -> EmbeddedBatch:
            batch = parse_answer(payload, len(inputs), inference.invalid_response, inference.quoted)
            self._check_dimensions(batch.vectors.shape[1])
            return batch

        try:
            batch = inference.post(body, parse, tally=tally, tokens=estimate, counted=_counted_tokens)
        except InferenceError as error:
            tally.charge(error)
            with self._lock:
                self.stats.batches_failed += 1
            raise
        finally:
            with self._lock:
                self.stats.batches += 1
                self.stats.requests += tally.requests
                self.stats.retries += tally.retries
                self.stats.rate_limited += tally.rate_limited
        if batch.counted_tokens is not None:
            self.calibration.record(characters, batch.counted_tokens)
            with self._lock:
                self.stats.tokens_counted += batch.counted_tokens
        return batch.vectors

    def _check_dimensions(self, dimensions: int) -> None:
        with self._lock:
            if self._dimensions is None:
                self._dimensions = dimensions
                return
            expected = self._dimensions
        if dimensions != expected:
            raise self._inference.invalid_response(
                f"{dimensions}-dimensional embeddings where earlier answers had {expected} dimensions"
            )

    def _rejection(self, status: int, detail: str, body: dict[str, Any]) -> InferenceError | None:
        return rejection(status, detail, body, base_url=self.base_url)


def _counted_tokens(batch: EmbeddedBatch) -> int | None:
    return batch.counted_tokens


class _BatchRun:
    """The failures of one :meth:`HerokuEmbedder.iter_document_batches` call, collected as batches finish."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.failures: list[BatchFailure] = []
        self.succeeded = False
        self.first_error: InferenceError | None = None
        self.configuration_error: InferenceConfigurationError | None = None

    def attempt(self, positions: list[int], embed: Callable[[], np.ndarray]) -> np.ndarray | None:
        """``embed()``'s vectors, or None after recording why the batch failed."""
        try:
            vectors = embed()
        except InferenceError as error:
            self.fail(positions, error)
            if isinstance(error, InferenceConfigurationError) and self.configuration_error is None:
                self.configuration_error = error
            return None
        self.succeeded = True
        return vectors

    def fail(self, positions: list[int], error: InferenceError) -> None:
        self.failures.append(BatchFailure(tuple(positions), error.code, type(error).__name__))
        if self.first_error is None:
            self.first_error = error
