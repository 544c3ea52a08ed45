"""How a rerank request fails, and the short code each failure publishes.

An error's message is for the operator: it names what to fix and may quote the server (with the
key redacted by the client). What reaches published output (``reason_not_reranked`` in the
context sets, the asset's metadata) is :attr:`RerankError.code` instead, one of a fixed
vocabulary, so no server or HTTP-layer text is ever published:

``http_<status>``
    The server answered with that status (400, 401, 403, 404, 413, 500, 503, ...).
``rate_limited``
    HTTP 429 on every attempt, or held back by an earlier 429 past the time budget.
``timeout``
    No connection or no response within the timeouts.
``connection_error``
    The connection failed (refused, reset, or the request could not be sent).
``invalid_response``
    A 200 whose body is not the contract's, or a body that could not be decoded.
"""

from __future__ import annotations

TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
RATE_LIMITED = "rate_limited"
INVALID_RESPONSE = "invalid_response"


def http_status_code(status: int) -> str:
    return f"http_{status}"


class RerankError(Exception):
    """Base of every rerank failure; ``requests``, ``retries``, ``rate_limited`` count the calls spent.

    ``code`` is the published form (see the module docstring); by default ``http_<status>``.
    """

    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code or self._default_code()
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0

    def _default_code(self) -> str:
        return http_status_code(self.status_code) if self.status_code else INVALID_RESPONSE


class RerankConfigurationError(RerankError):
    """The key or model is wrong, so every further request would fail the same way."""


class RerankBadRequest(RerankError):
    """HTTP 400 (or another unexpected 4xx) caused by this query's request: other queries may pass."""


class RerankSettingRejected(RerankConfigurationError):
    """HTTP 400 that rejects what every request shares; ``setting`` is ``top_n`` or ``documents_per_request``."""

    def __init__(self, message: str, *, setting: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.setting = setting


class RerankUnauthorized(RerankConfigurationError):
    """HTTP 401."""


class RerankForbidden(RerankConfigurationError):
    """HTTP 403."""


class RerankModelNotFound(RerankConfigurationError):
    """HTTP 404."""


class RerankRateLimited(RerankError):
    """HTTP 429 on every attempt."""

    retryable = True

    def _default_code(self) -> str:
        return RATE_LIMITED


class RerankServerError(RerankError):
    """HTTP 5xx on every attempt."""

    retryable = True


class RerankUnavailable(RerankError):
    """Connection refused, reset or timed out on every attempt (``code`` says which)."""

    retryable = True

    def _default_code(self) -> str:
        return CONNECTION_ERROR


class RerankProtocolError(RerankError):
    """A response the contract does not allow: a 200 body that is not the contract's, or an unexpected status.

    Retryable only when the body was damaged in transit (not JSON, undecodable): a well-formed
    JSON answer of the wrong shape comes back the same way on every attempt, and each one may
    be billed.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, code: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retryable = retryable

    def _default_code(self) -> str:
        if self.status_code in (None, 200):
            return INVALID_RESPONSE
        return http_status_code(self.status_code)
