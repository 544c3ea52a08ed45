"""How the local rerank service behaves: its key, its limits and the faults it injects."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pipeline.credentials import check_secret
from pipeline.rerank.contract import KNOWN_MODELS, MAX_DOCUMENTS_PER_REQUEST


@dataclass(frozen=True)
class ServiceConfig:
    """How the local service behaves. Rates are probabilities per accepted request."""

    api_key: str
    # None: every known model is attached; otherwise the others answer 403.
    allowed_models: Collection[str] | None = None
    # Per model, over a sliding 60 s window; None: unlimited.
    requests_per_minute: int | None = None
    # Documents accepted per request; lower than the contract's 1,000 to play a stricter server.
    max_documents: int = MAX_DOCUMENTS_PER_REQUEST
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
    # Recent requests kept in the in-memory log (documents included, so keep it bounded).
    request_log_limit: int = 1000

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("ServiceConfig.api_key is empty: the service must check a bearer token")
        check_secret("RERANK_KEY", self.api_key)
        for name in ("error_rate", "timeout_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"ServiceConfig.{name} must be within [0, 1], got {rate}")
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ValueError(f"ServiceConfig.requests_per_minute must be at least 1, got {self.requests_per_minute}")
        if not 1 <= self.max_documents <= MAX_DOCUMENTS_PER_REQUEST:
            raise ValueError(
                f"ServiceConfig.max_documents must be within [1, {MAX_DOCUMENTS_PER_REQUEST}], got {self.max_documents}"
            )
        for name in ("added_latency_seconds", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServiceConfig.{name} must not be negative, got {getattr(self, name)}")
        unknown = set(self.allowed_models or ()) - set(KNOWN_MODELS)
        if unknown:
            raise ValueError(f"allowed_models lists unknown models {sorted(unknown)}; known: {', '.join(KNOWN_MODELS)}")
