"""The ``/v1/rerank`` exchange as the client sees it.

The body it sends, the answer it accepts, the 400s it tells apart."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.inference import InferenceProtocolError
from pipeline.rerank.errors import RerankBadRequest, RerankError, RerankSettingRejected
from pipeline.rerank.results import RerankResult, ranked

# How servers word a 400 for a setting every request shares, as opposed to one query's content.
_TOP_N_REJECTED = re.compile(r"\btop_n\b")
_DOCUMENT_COUNT_REJECTED = re.compile(
    r"too many documents|number of documents|documents?\b[^.]*\b(?:limit|exceed|maximum|at most|more than)"
)
_DOCUMENT_LENGTH_REJECTED = re.compile(r"token|too long|too large|length")


@dataclass(frozen=True)
class BatchResult:
    """One request's answer: at most 1,000 documents ranked."""

    results: tuple[RerankResult, ...]
    api_version: str
    is_experimental: bool
    search_units: int


def request_body(model: str, query: str, documents: list[str], top_n: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "query": query, "documents": documents}
    if top_n is not None:
        # The results stop at the document count anyway; a stricter server need not see more.
        body["top_n"] = min(top_n, len(documents))
    return body


def parse_answer(
    payload: Any,
    body: dict[str, Any],
    broken: Callable[[str], InferenceProtocolError],
    quoted: Callable[[Any], str],
) -> BatchResult:
    """The answer to ``body``, checked against the contract; ``broken(reason)`` is the error raised when it breaks it.

    ``quoted`` renders a piece of the answer for a message (redacted, shortened).
    """
    document_count = len(body["documents"])
    expected = body.get("top_n", document_count)
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise broken("no 'results' list")
    results: list[RerankResult] = []
    for item in payload["results"]:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get("relevance_score") if isinstance(item, dict) else None
        if (
            type(index) is not int
            or not isinstance(score, (int, float))
            or isinstance(score, bool)
            or not math.isfinite(score)
        ):
            raise broken(f"a malformed result {quoted(item)}")
        if not 0 <= index < document_count:
            raise broken(f"result index {index} outside the {document_count} documents sent")
        results.append(RerankResult(index, float(score)))
    if len({result.index for result in results}) != len(results):
        raise broken("duplicate result indexes")
    if len(results) != expected:
        raise broken(f"{len(results)} results where {expected} were expected")
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    billed = meta.get("billed_units")
    units = billed.get("search_units") if isinstance(billed, dict) else None
    if type(units) is not int or units < 0:
        raise broken("no integer meta.billed_units.search_units")
    api_version = _api_version(meta.get("api_version"))
    if api_version is None:
        raise broken(f"a malformed meta.api_version {quoted(meta.get('api_version'))}")
    return BatchResult(
        results=tuple(ranked(results)),
        api_version=api_version[0],
        is_experimental=api_version[1],
        search_units=units,
    )


def rejection(
    status: int, detail: str, body: dict[str, Any], *, base_url: str, max_document_tokens: int | None
) -> RerankError | None:
    """A 400 or 413 as rerank words it; None leaves other statuses to the core's message.

    A 400 that rejects top_n or the document count fails every query alike
    (:class:`RerankSettingRejected`); any other, only this query.
    """
    if status == 413:
        return RerankBadRequest(
            f"{base_url} refused the request for this query as too large (HTTP 413): {detail}; "
            + _length_hint(max_document_tokens),
            status_code=status,
        )
    if status != 400:
        return None
    words = detail.lower()
    about_length = _DOCUMENT_LENGTH_REJECTED.search(words) is not None
    if "top_n" in body and _TOP_N_REJECTED.search(words):
        return RerankSettingRejected(
            f"{base_url} rejected top_n={body['top_n']} (HTTP 400): {detail}", setting="top_n", status_code=400
        )
    if _DOCUMENT_COUNT_REJECTED.search(words) and not about_length:
        return RerankSettingRejected(
            f"{base_url} rejected {len(body['documents'])} documents in one request (HTTP 400): {detail}",
            setting="documents_per_request",
            status_code=400,
        )
    hint = f"; {_length_hint(max_document_tokens)}" if about_length else ""
    return RerankBadRequest(
        f"{base_url} rejected the rerank request for this query (HTTP 400): {detail}{hint}", status_code=400
    )


def _length_hint(max_document_tokens: int | None) -> str:
    if max_document_tokens is None:
        return "documents are sent uncut: set max_document_tokens"
    return f"documents are cut to max_document_tokens={max_document_tokens} tokens: lower it"


def _api_version(value: Any) -> tuple[str, bool] | None:
    """``meta.api_version`` as (version, is_experimental); None when it is not the contract's shape.

    The field is informational, so a missing one or a bare version (``"2"``) does not fail a
    paid request; anything else (a list, a version that is neither text nor a number) means the
    server is not speaking this contract.
    """
    if value is None:
        return "", False
    if isinstance(value, dict):
        version, experimental = value.get("version", ""), value.get("is_experimental", False)
        if not isinstance(experimental, bool):
            return None
    else:
        version, experimental = value, False
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        return None
    return str(version), experimental
