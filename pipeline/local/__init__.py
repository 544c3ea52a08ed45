"""Local stand-ins for the services the pipeline calls: Heroku Inference ``/v1/rerank`` and ``/v1/embeddings``.

They are the offline default (``pipeline demo``, ``pipeline rerank-service``,
``pipeline embedding-service``) and the tests' doubles, not part of the product: nothing
under ``pipeline/`` imports them except the CLI, and they import nothing from the
pipeline's stages. What they need from the pipeline (its text analyzer, how it writes
header lines, the vectors it stored at ingest, its embedding model) is passed in by the
CLI (``pipeline.cli.local_scorer``, ``pipeline.cli.stand_in_vectors``).

- :mod:`pipeline.local.rerank_service`: the ``/v1/rerank`` app and its contract checks;
- :mod:`pipeline.local.embedding_service`: the ``/v1/embeddings`` app, its contract checks and token count;
- :mod:`pipeline.local.service`: what both share (bearer check, request log, faults, rate limits);
- :mod:`pipeline.local.rate_limits`: sliding-window limits on requests and tokens per minute;
- :mod:`pipeline.local.faults`: fault injection (the ``X-Fault`` header, queued and random faults);
- :mod:`pipeline.local.runner`: serving one in a background thread or the foreground;
- :mod:`pipeline.local.scoring`: the rerank scorer, a small linear model (not a cross-encoder);
- :mod:`pipeline.local.known_vectors`: vectors the pipeline already computed, looked up by text;
- :mod:`pipeline.local.hashed_vectors`: the embeddings stand-in's ``--fast`` vectors.
"""

from pipeline.local.config import EmbeddingServiceConfig, ServiceConfig
from pipeline.local.embedding_service import EmbeddingService, LoggedEmbeddingRequest
from pipeline.local.faults import FaultPlan
from pipeline.local.hashed_vectors import HashedVectors
from pipeline.local.known_vectors import StoredEmbeddings
from pipeline.local.rerank_service import LoggedRequest, RerankService
from pipeline.local.runner import LocalEmbeddingService, LocalRerankService, run_service
from pipeline.local.scoring import LocalRelevanceScorer

__all__ = [
    "EmbeddingService",
    "EmbeddingServiceConfig",
    "FaultPlan",
    "HashedVectors",
    "LocalEmbeddingService",
    "LocalRelevanceScorer",
    "LocalRerankService",
    "LoggedEmbeddingRequest",
    "LoggedRequest",
    "RerankService",
    "ServiceConfig",
    "StoredEmbeddings",
    "run_service",
]
