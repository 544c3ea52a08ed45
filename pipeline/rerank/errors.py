"""How a rerank request fails: the inference core's errors (:mod:`pipeline.inference.errors`) under rerank's names.

Each class is a subclass of both :class:`RerankError` and the core class for its kind, so
``except RerankConfigurationError`` and ``except InferenceConfigurationError`` both catch a
401, and what a failed query publishes is the same fixed-vocabulary ``code`` as before
(``http_401``, ``rate_limited``, ``timeout``, ``connection_error``, ``invalid_response``).
"""

from __future__ import annotations

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


class RerankError(InferenceError):
    """Base of every rerank failure."""


class RerankConfigurationError(RerankError, InferenceConfigurationError):
    """The key or model is wrong, so every further request would fail the same way."""


class RerankBadRequest(RerankError, InferenceBadRequest):
    """HTTP 400 (or another unexpected 4xx) caused by this query's request: other queries may pass."""


class RerankSettingRejected(RerankConfigurationError, InferenceSettingRejected):
    """HTTP 400 that rejects what every request shares; ``setting`` is ``top_n`` or ``documents_per_request``."""


class RerankUnauthorized(RerankConfigurationError, InferenceUnauthorized):
    """HTTP 401."""


class RerankForbidden(RerankConfigurationError, InferenceForbidden):
    """HTTP 403."""


class RerankModelNotFound(RerankConfigurationError, InferenceModelNotFound):
    """HTTP 404."""


class RerankRateLimited(RerankError, InferenceRateLimited):
    """HTTP 429 on every attempt."""


class RerankServerError(RerankError, InferenceServerError):
    """HTTP 5xx on every attempt."""


class RerankUnavailable(RerankError, InferenceUnavailable):
    """Connection refused, reset or timed out on every attempt (``code`` says which)."""


class RerankProtocolError(RerankError, InferenceProtocolError):
    """A 200 body that is not the contract's, or an unexpected status (retryable only when damaged in transit)."""


RERANK_ERRORS = ErrorClasses(
    bad_request=RerankBadRequest,
    setting_rejected=RerankSettingRejected,
    unauthorized=RerankUnauthorized,
    forbidden=RerankForbidden,
    model_not_found=RerankModelNotFound,
    rate_limited=RerankRateLimited,
    server_error=RerankServerError,
    unavailable=RerankUnavailable,
    protocol_error=RerankProtocolError,
)
