"""Reranking through Heroku Inference ``/v1/rerank``: the client and the endpoint's contract.

No Dagster here; ``pipeline/defs`` wraps these in resources and assets. The local
stand-in service lives in :mod:`pipeline.local`, outside the product.
"""

from pipeline.inference import RateLimitWaitExceeded, RequestRateLimiter, endpoint_of
from pipeline.rerank.client import InMemoryRerankCache, RerankCache, RerankClient
from pipeline.rerank.contract import KNOWN_MODELS, MAX_DOCUMENTS_PER_REQUEST, search_units
from pipeline.rerank.errors import (
    RerankBadRequest,
    RerankConfigurationError,
    RerankError,
    RerankForbidden,
    RerankModelNotFound,
    RerankProtocolError,
    RerankRateLimited,
    RerankServerError,
    RerankSettingRejected,
    RerankUnauthorized,
    RerankUnavailable,
)
from pipeline.rerank.results import (
    RerankOutcome,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankStats,
    cache_key,
)

__all__ = [
    "KNOWN_MODELS",
    "MAX_DOCUMENTS_PER_REQUEST",
    "InMemoryRerankCache",
    "RateLimitWaitExceeded",
    "RequestRateLimiter",
    "RerankBadRequest",
    "RerankCache",
    "RerankClient",
    "RerankConfigurationError",
    "RerankError",
    "RerankForbidden",
    "RerankModelNotFound",
    "RerankOutcome",
    "RerankProtocolError",
    "RerankRateLimited",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "RerankServerError",
    "RerankSettingRejected",
    "RerankStats",
    "RerankUnauthorized",
    "RerankUnavailable",
    "cache_key",
    "endpoint_of",
    "search_units",
]
