"""Reranking through Heroku Inference ``/v1/rerank``: the client, a local stand-in service, and its scorer.

No Dagster here; ``pipeline/defs`` wraps these in resources and assets.
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
from pipeline.rerank.scoring import LocalRelevanceScorer
from pipeline.rerank.service import (
    LocalRerankService,
    LoggedRequest,
    RerankService,
    ServiceConfig,
    run_service,
)

__all__ = [
    "KNOWN_MODELS",
    "MAX_DOCUMENTS_PER_REQUEST",
    "InMemoryRerankCache",
    "LocalRelevanceScorer",
    "LocalRerankService",
    "LoggedRequest",
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
    "RerankService",
    "RerankSettingRejected",
    "RerankStats",
    "RerankUnauthorized",
    "RerankUnavailable",
    "ServiceConfig",
    "cache_key",
    "endpoint_of",
    "run_service",
    "search_units",
]
