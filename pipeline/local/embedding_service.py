"""A local stand-in for Heroku Inference ``/v1/embeddings``: the offline remote-embedding path and its test double.

It speaks the endpoint's contract (:mod:`pipeline.embedding.contract`): bearer auth, the
400/401/403/404/429 cases, at most 96 inputs of at most 2,048 characters, ``input_type``,
``encoding_format`` ``raw`` (lists of floats) or ``base64`` (little-endian float32),
``allow_ignored_params``, ``usage`` and the ``x-ratelimit-*`` headers, limited on requests and
tokens per minute. Tokens are counted here, per input, with tiktoken's cl100k encoding, not
taken from the client; Cohere's own tokenizer counts somewhat differently.

It says what it is: the vectors come from the source it is given (the CLI gives it
all-MiniLM-L6-v2, 384 dimensions, or hashed vectors in ``--fast`` mode), not from Cohere Embed
Multilingual (1,024 dimensions), and every answer carries an ``X-Local-Stand-In`` header naming
that source; the ``model`` field echoes the requested model ID, as the real endpoint does.
It only returns float vectors: another ``embedding_type`` is a 400.

Faults and the request log work as in the rerank stand-in (:mod:`pipeline.local.service`);
each logged request keeps its inputs, ``input_type``, ``encoding_format`` and token count, so
tests can assert that passages went as ``search_document`` and questions as ``search_query``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.embedding.contract import (
    EMBEDDING_TYPE,
    EMBEDDINGS_PATH,
    ENCODING_FORMATS,
    INPUT_TYPES,
    MAX_INPUT_CHARACTERS,
    MAX_INPUTS_PER_REQUEST,
    RATE_WINDOW_SECONDS,
)
from pipeline.local.config import EmbeddingServiceConfig
from pipeline.local.rate_limits import REQUESTS, TOKENS
from pipeline.local.responses import Rejection
from pipeline.local.service import STAND_IN_HEADER, Logged, Seen, StandInService, string_list
from pipeline.local.token_count import count_tokens

# What a "malformed" fault sends: a 200 whose JSON body is cut off.
MALFORMED_BODY = b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0'
# The contract's defaults for fields a request leaves out.
DEFAULT_ENCODING_FORMAT = "raw"
BODY_FIELDS = frozenset({"model", "input", "input_type", "encoding_format", "embedding_type", "allow_ignored_params"})


class VectorSource(Protocol):
    """Embeds texts: a ``(len(texts), dimensions)`` float32 array of unit vectors, in input order."""

    @property
    def model(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class LoggedEmbeddingRequest(Logged):
    """One ``/v1/embeddings`` request as the service saw it; ``tokens`` as the service counted them."""

    inputs: tuple[str, ...] | None
    input_type: str | None
    encoding_format: str | None
    tokens: int | None

    @property
    def input_count(self) -> int | None:
        return None if self.inputs is None else len(self.inputs)


@dataclass
class _SeenEmbedding(Seen):
    inputs: tuple[str, ...] | None = None
    input_type: str | None = None
    encoding_format: str | None = None
    tokens: int | None = None


class EmbeddingService(StandInService[_SeenEmbedding, LoggedEmbeddingRequest]):
    """The ``/v1/embeddings`` app (:attr:`app`) plus its state: request log, fault plan, rate windows."""

    def __init__(self, config: EmbeddingServiceConfig, vectors: VectorSource) -> None:
        super().__init__(
            config,
            name="embeddings",
            path=EMBEDDINGS_PATH,
            malformed_body=MALFORMED_BODY,
            limits={REQUESTS: config.requests_per_minute, TOKENS: config.tokens_per_minute},
            window_seconds=RATE_WINDOW_SECONDS,
            quota_headers=True,
            identity_headers={
                STAND_IN_HEADER: f"local embeddings stand-in, not Heroku Inference; vectors: {vectors.model}"
            },
        )
        self.vectors = vectors

    @property
    def description(self) -> str:
        return (
            f"local embeddings stand-in ({EMBEDDINGS_PATH}), not Heroku Inference: vectors from {self.vectors.model}, "
            "whatever model a request names (its model ID is echoed back)"
        )

    def warm(self) -> None:
        count_tokens(["warm"])
        self.vectors.embed(["warm"])

    def _new_seen(self) -> _SeenEmbedding:
        return _SeenEmbedding()

    def _logged(self, seen: _SeenEmbedding, outcome: Logged) -> LoggedEmbeddingRequest:
        return LoggedEmbeddingRequest(
            **vars(outcome),
            inputs=seen.inputs,
            input_type=seen.input_type,
            encoding_format=seen.encoding_format,
            tokens=seen.tokens,
        )

    def _details(self, logged: LoggedEmbeddingRequest) -> str:
        return (
            f"inputs={logged.input_count} input_type={logged.input_type} "
            f"encoding_format={logged.encoding_format} tokens={logged.tokens}"
        )

    async def _respond(self, request: Request, seen: _SeenEmbedding) -> Response:
        model, body = await self._model_of(request, seen)
        inputs, seen.input_type, seen.encoding_format = _validated_fields(body)
        seen.inputs = tuple(inputs)
        seen.tokens = tokens = await run_in_threadpool(count_tokens, inputs)
        self._admit(seen, model, {REQUESTS: 1, TOKENS: tokens})
        faulty = await self._faulty_response(request, seen, inputs)
        if faulty is not None:
            return faulty
        vectors = await run_in_threadpool(self.vectors.embed, inputs)
        encode = _as_base64 if seen.encoding_format == "base64" else _as_floats
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": index, "embedding": encode(vector)}
                    for index, vector in enumerate(vectors)
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _as_floats(vector: np.ndarray) -> list[float]:
    # float32 values widened to Python floats: exact, so raw and base64 carry the same numbers.
    return np.asarray(vector, dtype=np.float32).tolist()


def _as_base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _validated_fields(body: dict[str, Any]) -> tuple[list[str], str | None, str]:
    """input, input_type (None if absent) and encoding_format, or a 400."""
    allow_ignored = body.get("allow_ignored_params", False)
    if not isinstance(allow_ignored, bool):
        raise Rejection(400, "bad_request", f"allow_ignored_params must be true or false, got {allow_ignored!r}")
    unsupported = sorted(set(body) - BODY_FIELDS)
    if unsupported and not allow_ignored:
        raise Rejection(
            400,
            "bad_request",
            f"unsupported fields {unsupported}; set allow_ignored_params to true to have them ignored",
        )
    inputs = string_list(body, "input", most=MAX_INPUTS_PER_REQUEST, items="inputs")
    for index, text in enumerate(inputs):
        if len(text) > MAX_INPUT_CHARACTERS:
            raise Rejection(
                400,
                "bad_request",
                f"input[{index}] has {len(text)} characters (at most {MAX_INPUT_CHARACTERS} per input)",
            )
    input_type = body.get("input_type")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise Rejection(400, "bad_request", f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    encoding_format = body.get("encoding_format") or DEFAULT_ENCODING_FORMAT
    if encoding_format not in ENCODING_FORMATS:
        raise Rejection(
            400, "bad_request", f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}, got {encoding_format!r}"
        )
    embedding_type = body.get("embedding_type") or EMBEDDING_TYPE
    if embedding_type != EMBEDDING_TYPE:
        raise Rejection(
            400,
            "bad_request",
            f"embedding_type must be {EMBEDDING_TYPE!r} (this stand-in returns float vectors only), "
            f"got {embedding_type!r}",
        )
    return inputs, input_type, encoding_format
