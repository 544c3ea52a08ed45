"""Local stand-ins for the services the pipeline calls: Heroku Inference ``/v1/rerank``, ``/v1/embeddings`` and
``/v1/chat/completions``.

They are the offline default (``pipeline demo``, ``pipeline rerank-service``,
``pipeline embedding-service``, ``pipeline chat-service``) and the tests' doubles, not part of the product: nothing
under ``pipeline/`` imports them except the CLI and its wiring of them (``pipeline.stand_ins``), and they import
nothing from the pipeline's stages. What they need from the pipeline (its text analyzer, how it writes
header lines, the vectors it stored at ingest, its embedding model) is passed in by that wiring
(``pipeline.stand_ins.local_scorer``, ``pipeline.stand_ins.stand_in_vectors``, the extractive answerer).

- :mod:`pipeline.local.rerank_service`: the ``/v1/rerank`` app and its contract checks;
- :mod:`pipeline.local.embedding_service`: the ``/v1/embeddings`` app and its contract checks;
- :mod:`pipeline.local.chat_service`: the ``/v1/chat/completions`` app and its contract checks;
- :mod:`pipeline.local.service`: what all share (bearer check, request log, faults, rate limits);
- :mod:`pipeline.local.token_count`: how the stand-ins count tokens (cl100k);
- :mod:`pipeline.local.rate_limits`: sliding-window limits on requests and tokens per minute;
- :mod:`pipeline.local.faults`: fault injection (the ``X-Fault`` header, queued and random faults);
- :mod:`pipeline.local.runner`: serving one in a background thread or the foreground;
- :mod:`pipeline.local.scoring`: the rerank scorer, a small linear model (not a cross-encoder);
- :mod:`pipeline.local.known_vectors`: vectors the pipeline already computed, looked up by text;
- :mod:`pipeline.local.hashed_vectors`: the embeddings stand-in's ``--fast`` vectors.
"""

from pipeline.local.chat_service import ChatService, LoggedChatRequest
from pipeline.local.config import ChatServiceConfig, EmbeddingServiceConfig, ServiceConfig
from pipeline.local.embedding_service import EmbeddingService, LoggedEmbeddingRequest
from pipeline.local.faults import FaultPlan
from pipeline.local.hashed_vectors import HashedVectors
from pipeline.local.known_vectors import StoredEmbeddings
from pipeline.local.rerank_service import LoggedRequest, RerankService
from pipeline.local.runner import LocalChatService, LocalEmbeddingService, LocalRerankService, run_service
from pipeline.local.scoring import LocalRelevanceScorer

__all__ = [
    "ChatService",
    "ChatServiceConfig",
    "EmbeddingService",
    "EmbeddingServiceConfig",
    "FaultPlan",
    "HashedVectors",
    "LocalChatService",
    "LocalEmbeddingService",
    "LocalRelevanceScorer",
    "LocalRerankService",
    "LoggedChatRequest",
    "LoggedEmbeddingRequest",
    "LoggedRequest",
    "RerankService",
    "ServiceConfig",
    "StoredEmbeddings",
    "run_service",
]
