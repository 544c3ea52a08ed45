"""How a Heroku Inference request fails, and the short code each failure publishes.

An error's message is for the operator: it names what to fix and may quote the server (with the
key redacted by the client). What reaches published output (``reason_not_reranked`` in the
context sets, an asset's metadata) is :attr:`InferenceError.code` instead, one of a fixed
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

Two families matter to callers: :class:`InferenceConfigurationError` (the key, the model or a
setting every request shares is wrong, so every further request would fail the same way) and
the ``retryable`` errors, which the client already retried within its budget. Each endpoint
(rerank, embeddings, chat) raises its own subclasses, named in an :class:`ErrorClasses`, so
``except InferenceError`` catches them all and ``type(error).__name__`` names the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
RATE_LIMITED = "rate_limited"
INVALID_RESPONSE = "invalid_response"


def http_status_code(status: int) -> str:
    return f"http_{status}"


class InferenceError(Exception):
    """Base of every inference failure; ``requests``, ``retries``, ``rate_limited`` count the calls spent.

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


class InferenceConfigurationError(InferenceError):
    """The key or model is wrong, so every further request would fail the same way."""


class InferenceBadRequest(InferenceError):
    """HTTP 400 (or another unexpected 4xx) caused by this request's content: other requests may pass."""


class InferenceSettingRejected(InferenceConfigurationError):
    """HTTP 400 that rejects what every request shares; ``setting`` names it (``top_n``, ...)."""

    def __init__(self, message: str, *, setting: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.setting = setting


class InferenceUnauthorized(InferenceConfigurationError):
    """HTTP 401."""


class InferenceForbidden(InferenceConfigurationError):
    """HTTP 403."""


class InferenceModelNotFound(InferenceConfigurationError):
    """HTTP 404."""


class InferenceRateLimited(InferenceError):
    """HTTP 429 on every attempt."""

    retryable = True

    def _default_code(self) -> str:
        return RATE_LIMITED


class InferenceServerError(InferenceError):
    """HTTP 5xx on every attempt."""

    retryable = True


class InferenceUnavailable(InferenceError):
    """Connection refused, reset or timed out on every attempt (``code`` says which)."""

    retryable = True

    def _default_code(self) -> str:
        return CONNECTION_ERROR


class InferenceProtocolError(InferenceError):
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


@dataclass(frozen=True)
class ErrorClasses:
    """The class an endpoint raises for each kind of failure; each a subclass of the core's."""

    bad_request: type[InferenceBadRequest] = InferenceBadRequest
    setting_rejected: type[InferenceSettingRejected] = InferenceSettingRejected
    unauthorized: type[InferenceUnauthorized] = InferenceUnauthorized
    forbidden: type[InferenceForbidden] = InferenceForbidden
    model_not_found: type[InferenceModelNotFound] = InferenceModelNotFound
    rate_limited: type[InferenceRateLimited] = InferenceRateLimited
    server_error: type[InferenceServerError] = InferenceServerError
    unavailable: type[InferenceUnavailable] = InferenceUnavailable
    protocol_error: type[InferenceProtocolError] = InferenceProtocolError
