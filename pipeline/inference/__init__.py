"""The Heroku Inference client core: what every endpoint's client (rerank, embeddings, chat) shares.

Split along the data flow, one concern per module:

- :mod:`~pipeline.inference.endpoint`: what the core must know about an endpoint (path, config vars, errors);
- :mod:`~pipeline.inference.pacing`: even pacing under requests/min and tokens/min;
- :mod:`~pipeline.inference.headers`: what ``Retry-After`` and ``x-ratelimit-*`` say;
- :mod:`~pipeline.inference.retry`: which failures are retried, how often, and how long apart;
- :mod:`~pipeline.inference.redaction`: server text as an error may quote it;
- :mod:`~pipeline.inference.errors`: the typed errors and the fixed vocabulary of published codes;
- :mod:`~pipeline.inference.cache`: results kept by endpoint, model and request content;
- :mod:`~pipeline.inference.client`: one paced, retried, redacting JSON POST.

No Dagster here, and nothing endpoint-specific: request bodies, token estimates and response
parsing belong to the endpoint layer (:mod:`pipeline.rerank.client`).
"""

from pipeline.inference.cache import InMemoryResultCache, ResultCache, request_key, text_hash
from pipeline.inference.client import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT,
    CallTally,
    ClientOptions,
    EndpointClient,
    InferenceClient,
)
from pipeline.inference.endpoint import EndpointContract, endpoint_of
from pipeline.inference.errors import (
    ErrorClasses,
    InferenceBadRequest,
    InferenceConfigurationError,
    InferenceError,
    InferenceForbidden,
    InferenceModelNotFound,
    InferenceProtocolError,
    InferenceRateLimited,
    InferenceServerError,
    InferenceSettingRejected,
    InferenceUnauthorized,
    InferenceUnavailable,
)
from pipeline.inference.pacing import DEFAULT_PACING_SHARE, RateLimitWaitExceeded, RequestRateLimiter
from pipeline.inference.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_TOTAL_SECONDS, RetryPolicy

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_TOTAL_SECONDS",
    "DEFAULT_PACING_SHARE",
    "DEFAULT_READ_TIMEOUT_SECONDS",
    "DEFAULT_TIMEOUT",
    "CallTally",
    "ClientOptions",
    "EndpointClient",
    "EndpointContract",
    "ErrorClasses",
    "InMemoryResultCache",
    "InferenceBadRequest",
    "InferenceClient",
    "InferenceConfigurationError",
    "InferenceError",
    "InferenceForbidden",
    "InferenceModelNotFound",
    "InferenceProtocolError",
    "InferenceRateLimited",
    "InferenceServerError",
    "InferenceSettingRejected",
    "InferenceUnauthorized",
    "InferenceUnavailable",
    "RateLimitWaitExceeded",
    "RequestRateLimiter",
    "ResultCache",
    "RetryPolicy",
    "endpoint_of",
    "request_key",
    "text_hash",
]
