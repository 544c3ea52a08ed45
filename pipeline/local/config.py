"""How the local stand-ins behave: their key, their limits and the faults they inject."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from pipeline.answer.contract import KNOWN_MODELS as CHAT_MODELS
from pipeline.credentials import check_secret
from pipeline.embedding.contract import KNOWN_MODELS as EMBEDDING_MODELS
from pipeline.rerank.contract import KNOWN_MODELS as RERANK_MODELS
from pipeline.rerank.contract import MAX_DOCUMENTS_PER_REQUEST


@dataclass(frozen=True)
class StandInConfig:
    """What both stand-ins share. Rates are probabilities per accepted request."""

    # The setting the key comes from (named when it holds a character no header can carry).
    key_setting: ClassVar[str]
    known_models: ClassVar[tuple[str, ...]]

    api_key: str
    # None: every known model is attached; otherwise the others answer 403.
    allowed_models: Collection[str] | None = None
    # Per model, over a sliding 60 s window; None: unlimited.
    requests_per_minute: int | None = None
    error_rate: float = 0.0
    added_latency_seconds: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    omit_retry_after: bool = False
    seed: int = 0
    # Honour the X-Fault request header.
    test_mode: bool = False
    # How long a "timeout" fault holds the request (released early when the service stops).
    hang_seconds: float = 30.0
    # Retry-After sent with an injected 429.
    fault_retry_after_seconds: int = 1
    # Recent requests kept in the in-memory log (texts included, so keep it bounded).
    request_log_limit: int = 1000

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not self.api_key:
            raise ValueError(f"{name}.api_key is empty: the service must check a bearer token")
        check_secret(self.key_setting, self.api_key)
        for field in ("error_rate", "timeout_rate", "malformed_rate"):
            rate = getattr(self, field)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}.{field} must be within [0, 1], got {rate}")
        _check_positive(self, "requests_per_minute")
        for field in ("added_latency_seconds", "hang_seconds"):
            if getattr(self, field) < 0:
                raise ValueError(f"{name}.{field} must not be negative, got {getattr(self, field)}")
        unknown = set(self.allowed_models or ()) - set(self.known_models)
        if unknown:
            raise ValueError(
                f"allowed_models lists unknown models {sorted(unknown)}; known: {', '.join(self.known_models)}"
            )


@dataclass(frozen=True)
class ServiceConfig(StandInConfig):
    """The local ``/v1/rerank`` service."""

    key_setting = "RERANK_KEY"
    known_models = RERANK_MODELS

    # Documents accepted per request; lower than the contract's 1,000 to play a stricter server.
    max_documents: int = MAX_DOCUMENTS_PER_REQUEST

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.max_documents <= MAX_DOCUMENTS_PER_REQUEST:
            raise ValueError(
                f"ServiceConfig.max_documents must be within [1, {MAX_DOCUMENTS_PER_REQUEST}], got {self.max_documents}"
            )


@dataclass(frozen=True)
class TokenLimitedConfig(StandInConfig):
    """A stand-in whose endpoint Heroku also limits in tokens per minute."""

    # Per model, over a sliding 60 s window, counted by the service's own tokenizer; None: unlimited.
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "tokens_per_minute")


@dataclass(frozen=True)
class EmbeddingServiceConfig(TokenLimitedConfig):
    """The local ``/v1/embeddings`` service."""

    key_setting = "EMBEDDING_KEY"
    known_models = EMBEDDING_MODELS


@dataclass(frozen=True)
class ChatServiceConfig(TokenLimitedConfig):
    """The local ``/v1/chat/completions`` service."""

    key_setting = "INFERENCE_KEY"
    known_models = CHAT_MODELS


def _check_positive(config: StandInConfig, field: str) -> None:
    value = getattr(config, field)
    if value is not None and value < 1:
        raise ValueError(f"{type(config).__name__}.{field} must be at least 1, got {value}")
