"""How an embeddings request fails: the inference core's errors under the embeddings endpoint's names.

Each class is a subclass of both :class:`EmbeddingError` and the core class for its kind, so
``except InferenceConfigurationError`` catches a 401 from either endpoint and
``type(error).__name__`` names this one. :class:`EmbeddingBatchesFailed` is what a run of many
batches raises once it has handed on every batch that succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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


class EmbeddingError(InferenceError):
    """Base of every embeddings failure."""


class EmbeddingConfigurationError(EmbeddingError, InferenceConfigurationError):
    """The key or model is wrong, so every further request would fail the same way."""


class EmbeddingBadRequest(EmbeddingError, InferenceBadRequest):
    """HTTP 400 (or another unexpected 4xx) caused by this batch's inputs: other batches may pass."""


class EmbeddingSettingRejected(EmbeddingConfigurationError, InferenceSettingRejected):
    """HTTP 400 that rejects what every request shares; ``setting`` names it (``inputs_per_request``, ...)."""


class EmbeddingUnauthorized(EmbeddingConfigurationError, InferenceUnauthorized):
    """HTTP 401."""


class EmbeddingForbidden(EmbeddingConfigurationError, InferenceForbidden):
    """HTTP 403."""


class EmbeddingModelNotFound(EmbeddingConfigurationError, InferenceModelNotFound):
    """HTTP 404."""


class EmbeddingRateLimited(EmbeddingError, InferenceRateLimited):
    """HTTP 429 on every attempt."""


class EmbeddingServerError(EmbeddingError, InferenceServerError):
    """HTTP 5xx on every attempt."""


class EmbeddingUnavailable(EmbeddingError, InferenceUnavailable):
    """Connection refused, reset or timed out on every attempt (``code`` says which)."""


class EmbeddingProtocolError(EmbeddingError, InferenceProtocolError):
    """A 200 body that is not the contract's, or an unexpected status (retryable only when damaged in transit)."""


EMBEDDING_ERRORS = ErrorClasses(
    bad_request=EmbeddingBadRequest,
    setting_rejected=EmbeddingSettingRejected,
    unauthorized=EmbeddingUnauthorized,
    forbidden=EmbeddingForbidden,
    model_not_found=EmbeddingModelNotFound,
    rate_limited=EmbeddingRateLimited,
    server_error=EmbeddingServerError,
    unavailable=EmbeddingUnavailable,
    protocol_error=EmbeddingProtocolError,
)


class InputTooLong(ValueError):
    """An input longer than the endpoint accepts, refused before anything is sent; names its position."""

    def __init__(self, position: int, length: int, limit: int) -> None:
        super().__init__(
            f"input {position} has {length:,} characters, more than the {limit:,} one embeddings input may have; "
            "chunks are cut to that length, so this text did not come from the chunker"
        )
        self.position = position


@dataclass(frozen=True)
class BatchFailure:
    """One batch that failed: the input positions it carried and why (the error's published code)."""

    positions: tuple[int, ...]
    code: str
    error_type: str


class EmbeddingBatchesFailed(EmbeddingError):
    """Some batches failed after every batch that could be embedded was handed on.

    ``failures`` lists each failed batch; ``failed_positions`` are the inputs without a vector;
    ``codes`` counts failed batches by code (``http_500``, ``rate_limited``, ...). ``code`` is the
    most frequent of them; ``cause`` (also ``__cause__``) is the error whose message says what to
    fix: the configuration error (401, 403, 404, a rejected setting) when there was one, since
    nothing more was sent after it and the batches left are failures with its code; else the
    first failure.
    """

    def __init__(self, failures: Sequence[BatchFailure], batches: int, cause: InferenceError) -> None:
        self.failures = tuple(failures)
        self.codes = Counter(failure.code for failure in self.failures)
        self.failed_positions = tuple(sorted(p for failure in self.failures for p in failure.positions))
        self.batches = batches
        self.cause = cause
        summary = ", ".join(f"{count} × {code}" for code, count in self.codes.most_common())
        super().__init__(
            f"{len(self.failures)} of {batches} embedding batches failed ({summary}; "
            f"{len(self.failed_positions)} inputs without a vector): {cause}",
            code=self.codes.most_common(1)[0][0],
        )
