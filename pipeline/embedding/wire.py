"""The ``/v1/embeddings`` exchange as the client sees it: the body it sends, the answers it accepts, its 400s.

An answer carries one vector per input, each under the ``index`` of the input it embeds, in
any order: either a JSON array of floats (``encoding_format: raw``) or the base64 of the
little-endian float32 bytes (``base64``, what OpenAI's SDK asks for by default). Whatever the
server sends, the client hands on float32 unit vectors in input order, and refuses an answer
that leaves an input out, embeds one twice, or mixes vector lengths.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.embedding.contract import EMBEDDING_TYPE
from pipeline.embedding.errors import EmbeddingBadRequest, EmbeddingError, EmbeddingSettingRejected
from pipeline.inference import InferenceProtocolError

# How servers word a 400 for something every request shares, as opposed to one batch's inputs.
_SHARED_FIELDS = ("input_type", "encoding_format", "embedding_type")
_INPUT_COUNT_REJECTED = re.compile(
    r"too many (?:inputs|texts)|number of (?:inputs|texts)"
    r"|(?:inputs|texts)\b[^.]*\b(?:limit|exceed|maximum|at most|more than)"
)
_INPUT_LENGTH_REJECTED = re.compile(r"token|too long|too large|length|characters")


@dataclass(frozen=True)
class EmbeddedBatch:
    """One request's answer: a ``(inputs, dimensions)`` float32 array of unit vectors in input order,
    and the tokens the server says it counted (None when its answer has no ``usage``)."""

    vectors: np.ndarray
    counted_tokens: int | None


def request_body(model: str, inputs: Sequence[str], input_type: str, encoding_format: str) -> dict[str, Any]:
    return {
        "model": model,
        "input": list(inputs),
        "input_type": input_type,
        "encoding_format": encoding_format,
        "embedding_type": EMBEDDING_TYPE,
    }


def parse_answer(
    payload: Any,
    input_count: int,
    broken: Callable[[str], InferenceProtocolError],
    quoted: Callable[[Any], str],
) -> EmbeddedBatch:
    """The answer to a request of ``input_count`` inputs, checked against the contract.

    ``broken(reason)`` is the error raised when it breaks it; ``quoted`` renders a piece of the
    answer for a message (redacted, shortened).
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise broken("no 'data' list")
    if len(data) != input_count:
        raise broken(f"{len(data)} embeddings for {input_count} inputs")
    vectors: list[np.ndarray | None] = [None] * input_count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int:
            raise broken(f"an embedding without an integer 'index': {quoted(item)}")
        if not 0 <= index < input_count:
            raise broken(f"embedding index {index} outside the {input_count} inputs sent")
        if vectors[index] is not None:
            raise broken(f"two embeddings for input {index}")
        vectors[index] = _vector(item.get("embedding"), index, broken, quoted)
    lengths = {len(vector) for vector in vectors if vector is not None}
    if len(lengths) > 1:
        raise broken(f"embeddings of different lengths ({', '.join(map(str, sorted(lengths)))})")
    matrix = np.stack([vector for vector in vectors if vector is not None])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or not np.all(norms > 0):
        raise broken("an embedding that is not a finite non-zero vector")
    return EmbeddedBatch((matrix / norms).astype(np.float32), _counted_tokens(payload.get("usage")))


def _vector(
    value: Any, index: int, broken: Callable[[str], InferenceProtocolError], quoted: Callable[[Any], str]
) -> np.ndarray:
    """One embedding as float64: a JSON array of numbers, or base64 of little-endian float32 bytes."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise broken(f"embedding {index} is neither a list of numbers nor base64: {quoted(value)}") from None
        if not raw or len(raw) % 4:
            raise broken(f"base64 embedding {index} has {len(raw)} bytes, not a whole number of float32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if isinstance(value, list) and value:
        # No dtype given: strings, booleans, nulls or nested lists then show in the array's kind or shape.
        array = np.asarray(value)
        if array.ndim == 1 and array.dtype.kind in "fi":
            return array.astype(np.float64)
    raise broken(f"embedding {index} is neither a list of numbers nor base64: {quoted(value)}")


def _counted_tokens(usage: Any) -> int | None:
    """``usage.total_tokens`` (or ``prompt_tokens``): what the request counted against tokens per minute.

    Informational in the contract, so an answer without it is still used; the pacing then keeps
    its estimate for the request.
    """
    if not isinstance(usage, dict):
        return None
    for name in ("total_tokens", "prompt_tokens"):
        count = usage.get(name)
        if type(count) is int and count >= 0:
            return count
    return None


def rejection(status: int, detail: str, body: dict[str, Any], *, base_url: str) -> EmbeddingError | None:
    """A 400 or 413 as the embeddings endpoint words it; None leaves other statuses to the core's message.

    A 400 that rejects ``input_type``, ``encoding_format``, ``embedding_type`` or the number of
    inputs fails every batch alike (:class:`EmbeddingSettingRejected`); any other, only this batch.
    """
    if status == 413:
        return EmbeddingBadRequest(
            f"{base_url} refused a batch of {len(body['input'])} inputs as too large (HTTP 413): {detail}; "
            "lower inputs_per_request",
            status_code=status,
        )
    if status != 400:
        return None
    words = detail.lower()
    for field in _SHARED_FIELDS:
        if field in words:
            return EmbeddingSettingRejected(
                f"{base_url} rejected {field}={body[field]!r} (HTTP 400): {detail}", setting=field, status_code=400
            )
    if _INPUT_COUNT_REJECTED.search(words) and not _INPUT_LENGTH_REJECTED.search(words):
        return EmbeddingSettingRejected(
            f"{base_url} rejected {len(body['input'])} inputs in one request (HTTP 400): {detail}; "
            "lower inputs_per_request",
            setting="inputs_per_request",
            status_code=400,
        )
    return EmbeddingBadRequest(
        f"{base_url} rejected a batch of {len(body['input'])} inputs (HTTP 400): {detail}", status_code=400
    )
