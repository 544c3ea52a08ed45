"""Local stand-ins for the services the pipeline calls: today Heroku Inference ``/v1/rerank``.

They are the offline default (``pipeline demo``, ``pipeline rerank-service``) and the
tests' doubles, not part of the product: nothing under ``pipeline/`` imports them
except the CLI, and they import nothing from the pipeline's stages. What they need
from the pipeline (its text analyzer, how it writes header lines, the vectors it
stored at ingest) is passed in by the CLI (``pipeline.cli.local_scorer``).

- :mod:`pipeline.local.rerank_service`: the ``/v1/rerank`` app and its contract checks;
- :mod:`pipeline.local.faults`: fault injection (the ``X-Fault`` header, queued and random faults);
- :mod:`pipeline.local.runner`: serving it in a background thread or the foreground;
- :mod:`pipeline.local.scoring`: the scorer, a small linear model (not a cross-encoder);
- :mod:`pipeline.local.known_vectors`: vectors the pipeline already computed, looked up by text.
"""

from pipeline.local.config import ServiceConfig
from pipeline.local.faults import FaultPlan
from pipeline.local.known_vectors import StoredEmbeddings
from pipeline.local.rerank_service import LoggedRequest, RerankService
from pipeline.local.runner import LocalRerankService, run_service
from pipeline.local.scoring import LocalRelevanceScorer

__all__ = [
    "FaultPlan",
    "LocalRelevanceScorer",
    "LocalRerankService",
    "LoggedRequest",
    "RerankService",
    "ServiceConfig",
    "StoredEmbeddings",
    "run_service",
]
