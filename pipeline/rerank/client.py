"""Client for the Heroku Inference ``/v1/rerank`` endpoint (and the local service that mimics it).

A thin layer over the inference core (:mod:`pipeline.inference`), which paces, retries and
redacts: this module checks rerank requests, cuts long documents, sends more than 1,000
documents in batches and merges them, and runs many queries in parallel through the result
cache (:meth:`RerankClient.rerank_many`). The wire format (the body, the answer, which 400s
fail every query) is :mod:`pipeline.rerank.protocol`; results are :mod:`pipeline.rerank.results`.

What a failed query publishes is its error's ``code`` (:mod:`pipeline.inference.errors`), never
a message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, Unpack

from pipeline.inference import (
    CallTally,
    ClientOptions,
    EndpointClient,
    EndpointContract,
    InferenceClient,
    InferenceError,
    InMemoryResultCache,
    ResultCache,
)
from pipeline.rerank.contract import KNOWN_MODELS, MAX_DOCUMENTS_PER_REQUEST, RERANK_PATH, requests_per_minute_for
from pipeline.rerank.errors import RERANK_ERRORS, RerankConfigurationError, RerankError, RerankSettingRejected
from pipeline.rerank.protocol import BatchResult, parse_answer, rejection, request_body
from pipeline.rerank.results import (
    RerankOutcome,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankStats,
    cache_key,
    check_top_n,
    ranked,
)
from pipeline.tokens import truncate_to_tokens

__all__ = [
    "DEFAULT_MAX_DOCUMENT_TOKENS",
    "RERANK",
    "InMemoryRerankCache",
    "RerankCache",
    "RerankClient",
    "RerankConfigurationError",
    "RerankOutcome",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "RerankSettingRejected",
    "RerankStats",
]

log = logging.getLogger(__name__)

# Cohere truncates long documents itself; cutting them here keeps request bodies small.
DEFAULT_MAX_DOCUMENT_TOKENS = 4000

RERANK = EndpointContract(
    name="rerank",
    path=RERANK_PATH,
    url_setting="RERANK_URL",
    key_setting="RERANK_KEY",
    model_setting="RERANK_MODEL_ID",
    known_models=KNOWN_MODELS,
    errors=RERANK_ERRORS,
)
# Rerank's names for the core's result cache; the durable one lives in the state store.
RerankCache = ResultCache
InMemoryRerankCache = InMemoryResultCache


class RerankClient(EndpointClient):
    """Sync client for ``POST {base_url}/v1/rerank``; one instance may be shared by many threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        requests_per_minute: int | None = None,
        max_document_tokens: int | None = DEFAULT_MAX_DOCUMENT_TOKENS,
        **options: Unpack[ClientOptions],
    ) -> None:
        if max_document_tokens is not None and max_document_tokens < 1:
            raise ValueError(f"max_document_tokens must be at least 1, got {max_document_tokens}")
        self._inference = InferenceClient(
            RERANK,
            base_url,
            api_key,
            model,
            requests_per_minute=requests_per_minute or requests_per_minute_for(model),
            rejection=self._rejection,
            **options,
        )
        self.base_url = self._inference.base_url
        self.model = model
        self.max_document_tokens = max_document_tokens
        self._clock = self._inference.clock

    def __repr__(self) -> str:
        return f"RerankClient(base_url={self.base_url!r}, model={self.model!r})"

    # --- public API -------------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> RerankResponse:
        """Rank ``documents`` for ``query``; more than 1,000 documents are sent in batches and merged."""
        check_top_n(top_n)
        return self._rerank_prepared(query, self.prepare_documents(documents), top_n)

    def rerank_many(
        self,
        requests: Sequence[RerankRequest],
        *,
        max_workers: int = 8,
        cache: ResultCache | None = None,
        on_result: Callable[[RerankOutcome], None] | None = None,
    ) -> list[RerankOutcome]:
        """Rerank every request in parallel, in request order; one query's failure is its own outcome.

        A configuration error (401, 403, 404, or a 400 rejecting top_n or the document
        count) stops every query not yet sent and is raised: all of them would fail the
        same way. Failures are never cached, so a rerun sends only them. The cache and ``on_result`` are
        only called from the calling thread, so neither needs to be thread-safe.
        """
        outcomes: list[RerankOutcome | None] = [None] * len(requests)
        aborted = threading.Event()

        def finish(position: int, outcome: RerankOutcome) -> None:
            outcomes[position] = outcome
            if on_result is not None:
                on_result(outcome)

        def run(query: str, documents: list[str], top_n: int | None) -> RerankResponse | None:
            # Workers check and set the flag themselves so an abort does not wait for the main thread.
            if aborted.is_set():
                return None
            try:
                return self._rerank_prepared(query, documents, top_n)
            except RerankConfigurationError:
                aborted.set()
                raise

        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rerank")
        pending: dict[Future[RerankResponse | None], tuple[int, str, list[str]]] = {}
        try:
            for position, request in enumerate(requests):
                if aborted.is_set():
                    break
                documents = self.prepare_documents(request.documents)
                key = cache_key(self.base_url, self.model, request.query, documents, request.top_n)
                cached = self._cached_response(cache, key, documents)
                if cached is not None:
                    finish(position, RerankOutcome.succeeded(request.query_id, cached, cached=True))
                    continue
                future = pool.submit(run, request.query, documents, request.top_n)
                pending[future] = (position, key, documents)
            for future in as_completed(pending):
                position, key, documents = pending[future]
                query_id = requests[position].query_id
                try:
                    response = future.result()
                except RerankConfigurationError:
                    raise
                except InferenceError as error:
                    finish(position, RerankOutcome.failed(query_id, error))
                    continue
                if response is None:
                    continue
                if cache is not None:
                    cache.put(key, response.to_cache_value(documents))
                finish(position, RerankOutcome.succeeded(query_id, response))
        finally:
            # Requests already in flight finish their current call; queued ones are dropped.
            pool.shutdown(wait=True, cancel_futures=True)
        return [outcome for outcome in outcomes if outcome is not None]

    def prepare_documents(self, documents: Sequence[str]) -> list[str]:
        """The documents as they will be sent: each cut to ``max_document_tokens`` tokens."""
        if isinstance(documents, str):
            raise TypeError("documents must be a sequence of strings, not one string")
        if self.max_document_tokens is None:
            return list(documents)
        return [truncate_to_tokens(document, self.max_document_tokens) for document in documents]

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _cached_response(cache: ResultCache | None, key: str, documents: Sequence[str]) -> RerankResponse | None:
        value = cache.get(key) if cache is not None else None
        if value is None:
            return None
        try:
            return RerankResponse.from_cache_value(value, documents)
        except (KeyError, IndexError, TypeError, ValueError):
            log.warning("ignoring unreadable rerank cache entry %s", key)
            return None

    def _rerank_prepared(self, query: str, documents: list[str], top_n: int | None) -> RerankResponse:
        started = self._clock()
        tally = CallTally()
        try:
            if len(documents) <= MAX_DOCUMENTS_PER_REQUEST:
                batches = [self._call(query, documents, top_n, tally)] if documents else []
                results = batches[0].results if batches else ()
            else:
                # Every document needs a score to merge batches, so top_n is applied afterwards.
                batches = []
                merged: list[RerankResult] = []
                for offset in range(0, len(documents), MAX_DOCUMENTS_PER_REQUEST):
                    batch = self._call(query, documents[offset : offset + MAX_DOCUMENTS_PER_REQUEST], None, tally)
                    batches.append(batch)
                    merged.extend(RerankResult(offset + r.index, r.relevance_score) for r in batch.results)
                results = tuple(ranked(merged)[:top_n])
        except InferenceError as error:
            tally.charge(error)
            raise
        return RerankResponse(
            results=results,
            api_version=batches[0].api_version if batches else "",
            is_experimental=batches[0].is_experimental if batches else False,
            search_units=sum(batch.search_units for batch in batches),
            requests=tally.requests,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            latency_seconds=self._clock() - started,
        )

    def _call(self, query: str, documents: list[str], top_n: int | None, tally: CallTally) -> BatchResult:
        """One request of at most 1,000 documents, paced and retried by the core."""
        body = request_body(self.model, query, documents, top_n)
        inference = self._inference

        def parse(payload: Any) -> BatchResult:
            return parse_answer(payload, body, inference.invalid_response, inference.quoted)

        # /v1/rerank has no tokens-per-minute limit: the request carries no token estimate.
        return inference.post(body, parse, tally=tally)

    def _rejection(self, status: int, detail: str, body: dict[str, Any]) -> RerankError | None:
        return rejection(status, detail, body, base_url=self.base_url, max_document_tokens=self.max_document_tokens)
