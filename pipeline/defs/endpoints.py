"""Where the Heroku Inference endpoints are and how their clients are tuned.

An endpoint (URL, key, model) is a resource dependency built from the environment by
``from_settings``, never run config (see :mod:`pipeline.defs.resources`); the client's tuning
fields are config, shared by every inference resource through :class:`InferenceClientConfig`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
import httpx
from pydantic import Field

from pipeline import settings
from pipeline.inference import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_TOTAL_SECONDS,
    DEFAULT_READ_TIMEOUT_SECONDS,
)

Client = TypeVar("Client")


class InferenceClientConfig(dg.ConfigurableResource):
    """The fields that tune a Heroku Inference client, set in a run's ``resources.<name>.config``."""

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="The model's request limit (default: the published one); paced at 98% of it."
    )
    connect_timeout_seconds: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, description="Longest wait to open a connection."
    )
    read_timeout_seconds: float = Field(
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        gt=0,
        description="Longest wait for the response (and between its bytes); a request that times out is retried.",
    )
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, description="Attempts per request, retries included.")
    max_total_seconds: float = Field(
        default=DEFAULT_MAX_TOTAL_SECONDS,
        gt=0,
        description="Time budget per request, rate-limit waits and retries included; past it the request fails.",
    )

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout_seconds, connect=self.connect_timeout_seconds)

    def build_client(self, client: Callable[..., Client], endpoint: "InferenceEndpoint", **options: Any) -> Client:
        """A ``client`` of ``endpoint``, tuned by these fields and the client's own ``options``.

        Building it checks the endpoint's key: a bad one fails here, naming its variable, before any request.
        """
        return client(
            endpoint.url,
            endpoint.api_key,
            endpoint.model_id,
            requests_per_minute=self.requests_per_minute,
            timeout=self.timeout(),
            max_attempts=self.max_attempts,
            max_total_seconds=self.max_total_seconds,
            **options,
        )


@dataclass(frozen=True)
class InferenceEndpoint:
    """Where an inference endpoint's requests go, the key they carry and the model (Heroku's ``<AS>_URL``,
    ``<AS>_KEY`` and ``<AS>_MODEL_ID`` of a model attached ``--as <AS>``); the key never shows in a repr."""

    url: str
    api_key: str
    model_id: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, model_id={self.model_id!r})"


@dataclass(frozen=True, repr=False)
class EmbeddingEndpoint(InferenceEndpoint):
    """EMBEDDING_URL, EMBEDDING_KEY and EMBEDDING_MODEL_ID."""

    @classmethod
    def from_settings(cls) -> "EmbeddingEndpoint | None":
        """The endpoint the environment names; None (the local model) when none of the three is set.

        Some but not all of them is a SettingError naming the missing ones: a half-attached
        model must not fall back to the local one silently.
        """
        if not settings.all_or_none("EMBEDDING_URL", "EMBEDDING_KEY", "EMBEDDING_MODEL_ID"):
            return None
        return cls(
            settings.string("EMBEDDING_URL"), settings.string("EMBEDDING_KEY"), settings.string("EMBEDDING_MODEL_ID")
        )


@dataclass(frozen=True, repr=False)
class RerankEndpoint(InferenceEndpoint):
    """RERANK_URL, RERANK_KEY and RERANK_MODEL_ID."""

    @classmethod
    def from_settings(cls) -> "RerankEndpoint":
        return cls(settings.string("RERANK_URL"), settings.string("RERANK_KEY"), settings.string("RERANK_MODEL_ID"))


@dataclass(frozen=True, repr=False)
class ChatEndpoint(InferenceEndpoint):
    """INFERENCE_URL, INFERENCE_KEY and INFERENCE_MODEL_ID: the chat model attached ``--as INFERENCE``."""

    @classmethod
    def from_settings(cls) -> "ChatEndpoint | None":
        """The endpoint the environment names; None (the local extractive answerer) when none of the three is set.

        Some but not all of them is a SettingError naming the missing ones, as for the embeddings endpoint.
        """
        if not settings.all_or_none("INFERENCE_URL", "INFERENCE_KEY", "INFERENCE_MODEL_ID"):
            return None
        return cls(
            settings.string("INFERENCE_URL"), settings.string("INFERENCE_KEY"), settings.string("INFERENCE_MODEL_ID")
        )
