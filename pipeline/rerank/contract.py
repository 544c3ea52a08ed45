"""Facts about the Heroku Inference ``/v1/rerank`` endpoint shared by the client and the local service.

Source: Heroku's /v1/rerank reference (models, rate limits, error codes) and Cohere's
billing rule, which Heroku passes through: one search unit per query per 100 documents.
"""

from __future__ import annotations

import math

RERANK_PATH = "/v1/rerank"

# Published per-model limits, in requests per minute.
MODEL_REQUESTS_PER_MINUTE: dict[str, int] = {
    "cohere-rerank-3-5": 250,
    "amazon-rerank-1-0": 200,
}
KNOWN_MODELS: tuple[str, ...] = tuple(MODEL_REQUESTS_PER_MINUTE)
# An unknown model gets the lowest published limit: safer to under-use than to collect 429s.
FALLBACK_REQUESTS_PER_MINUTE = min(MODEL_REQUESTS_PER_MINUTE.values())
RATE_WINDOW_SECONDS = 60.0

MAX_DOCUMENTS_PER_REQUEST = 1000
DOCUMENTS_PER_SEARCH_UNIT = 100
API_VERSION = "2"


def requests_per_minute_for(model: str) -> int:
    return MODEL_REQUESTS_PER_MINUTE.get(model, FALLBACK_REQUESTS_PER_MINUTE)


def search_units(document_count: int) -> int:
    """Billed units for one query over ``document_count`` documents (rounded up per 100)."""
    return math.ceil(document_count / DOCUMENTS_PER_SEARCH_UNIT)
