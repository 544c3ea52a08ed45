"""The local stand-ins (``pipeline.local``) wired to the product: the one place that lends them what they need
from the pipeline (its analyzer, header lines, stored vectors, embedding model and extractive answerer).

The ``*-service`` commands serve one in the foreground; ``pipeline demo``, ``pipeline ask`` and
``pipeline serve-demo`` start them in the background on their default ports.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from pipeline import settings

if TYPE_CHECKING:
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import HashedVectors, LocalRelevanceScorer

RERANK_PORT = 8765
EMBEDDING_PORT = 8766
CHAT_PORT = 8767
# The key the local embeddings and chat stand-ins check when EMBEDDING_KEY or INFERENCE_KEY is unset.
LOCAL_DEV_KEY = "local-dev-key"
# The model the demo's embeddings stand-in plays: the one app.json attaches as EMBEDDING.
DEMO_EMBEDDING_MODEL_ID = "cohere-embed-multilingual"
# The model ID the demo's chat requests name: the one the README attaches as INFERENCE. The stand-in answers
# extractively whatever a request names, and its answers say so (model extractive-answerer).
DEMO_CHAT_MODEL_ID = "claude-4-5-haiku"


def embedding_key() -> str:
    """The bearer token the local embeddings stand-in checks: EMBEDDING_KEY, else the local default."""
    return settings.value("EMBEDDING_KEY") or LOCAL_DEV_KEY


def chat_key() -> str:
    """The bearer token the local chat stand-in checks: INFERENCE_KEY, else the local default."""
    return settings.value("INFERENCE_KEY") or LOCAL_DEV_KEY


def stand_in_vectors(*, fast: bool, dimensions: int | None = None) -> MiniLMEmbedder | HashedVectors:
    """The embeddings stand-in's vectors: the pipeline's local model, or hashed ones (``fast``)."""
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import HashedVectors

    if fast:
        return HashedVectors() if dimensions is None else HashedVectors(dimensions)
    if dimensions is not None:
        raise ValueError("--dimensions applies to --fast only: all-MiniLM-L6-v2 vectors have 384 dimensions")
    return MiniLMEmbedder()


def local_scorer(embedder: MiniLMEmbedder | None = None, **options: Any) -> LocalRelevanceScorer:
    """The stand-in's scorer, reading documents as the pipeline writes them: its analyzer, its header lines.

    ``options`` go to :class:`pipeline.local.LocalRelevanceScorer` (``known_vectors``,
    ``cache_size``, ``weights``); ``embedder`` defaults to a new all-MiniLM-L6-v2 embedder.
    """
    from pipeline.chunking import header_line
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import LocalRelevanceScorer
    from pipeline.store.bm25 import analyze

    return LocalRelevanceScorer(embedder or MiniLMEmbedder(), analyze=analyze, header_line=header_line, **options)


def _stored_vectors_scorer(embedder: MiniLMEmbedder | None = None) -> LocalRelevanceScorer:
    """The local scorer, reusing the embeddings the pipeline stored at ingest (same model, computed earlier)."""
    from pipeline.instance import state_store_url
    from pipeline.local import StoredEmbeddings
    from pipeline.store.state import StateStore

    store = StateStore(state_store_url())
    return local_scorer(embedder, known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts))


def stand_in(command: str, config, vectors):
    """The stand-in service a ``*-service`` command serves, given what the pipeline lends it."""
    from pipeline.answer.extractive import ExtractiveChatModel
    from pipeline.local import ChatService, EmbeddingService, RerankService

    if command == "embedding-service":
        return EmbeddingService(config, vectors)
    if command == "chat-service":
        return ChatService(config, ExtractiveChatModel())
    return RerankService(config, _stored_vectors_scorer())


def serve_stand_in(host: str, port: int, service) -> int:
    from pipeline.local import run_service

    # One line per request from the service (status, model, counts, fault; never the token or the texts).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_service(service, host=host, port=port)
    return 0


def local_rerank_service(stack: ExitStack, port: int, embedder: MiniLMEmbedder) -> str:
    """The rerank stand-in, scoring with the embeddings stored at ingest; its URL. It stops when ``stack`` closes."""
    from pipeline.local import LocalRerankService, ServiceConfig

    service = stack.enter_context(
        LocalRerankService(
            ServiceConfig(api_key=settings.string("RERANK_KEY")),
            port=port,
            warm=True,
            scorer=_stored_vectors_scorer(embedder),
        )
    )
    return service.url


def local_embedding_service(stack: ExitStack, port: int, embedder: MiniLMEmbedder) -> str:
    """The embeddings stand-in with all-MiniLM-L6-v2 vectors, playing the EMBEDDING add-on; its URL."""
    from pipeline.local import EmbeddingServiceConfig, LocalEmbeddingService

    service = stack.enter_context(
        LocalEmbeddingService(EmbeddingServiceConfig(api_key=embedding_key()), vectors=embedder, port=port, warm=True)
    )
    return service.url


def local_chat_service(stack: ExitStack, port: int) -> str:
    """The chat stand-in answering with the extractive answerer, playing a chat model attached --as INFERENCE;
    its URL."""
    from pipeline.answer.extractive import ExtractiveChatModel
    from pipeline.local import ChatServiceConfig, LocalChatService

    config = ChatServiceConfig(api_key=chat_key())
    service = stack.enter_context(LocalChatService(config, answerer=ExtractiveChatModel(), port=port, warm=True))
    return service.url


def _attach_stand_in(name: str, url: str, key: str, model_id: str) -> None:
    """Point ``<name>_URL``, ``<name>_KEY`` and ``<name>_MODEL_ID`` (unless set) at a stand-in, as attaching a
    model ``--as <name>`` sets them."""
    os.environ[f"{name}_URL"] = url
    os.environ[f"{name}_KEY"] = key
    os.environ.setdefault(f"{name}_MODEL_ID", model_id)


def start_missing_stand_ins(stack: ExitStack, *, local_embeddings: bool) -> None:
    """Start the local rerank, embeddings and chat stand-ins for the endpoints the environment does not name.

    Without RERANK_URL the rerank stand-in serves the default one. Without EMBEDDING_URL (and unless
    ``local_embeddings``) the embeddings stand-in plays the EMBEDDING add-on, and without INFERENCE_URL
    the chat stand-in plays a chat model attached --as INFERENCE: their variables are set to them, so
    resources built afterwards take the remote paths as a deploy with those models does. They stop
    when ``stack`` closes.
    """
    from pipeline.embedding import MiniLMEmbedder

    # One all-MiniLM-L6-v2 session for both stand-ins.
    embedder = MiniLMEmbedder()
    if not settings.is_set("RERANK_URL"):
        local_rerank_service(stack, RERANK_PORT, embedder)
    if not local_embeddings and not settings.is_set("EMBEDDING_URL"):
        url = local_embedding_service(stack, EMBEDDING_PORT, embedder)
        _attach_stand_in("EMBEDDING", url, embedding_key(), DEMO_EMBEDDING_MODEL_ID)
    if not settings.is_set("INFERENCE_URL"):
        _attach_stand_in("INFERENCE", local_chat_service(stack, CHAT_PORT), chat_key(), DEMO_CHAT_MODEL_ID)
