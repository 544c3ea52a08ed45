"""Dagster resources for the Heroku Inference endpoints: the embedder, the rerank endpoint and the chat model.

Each is an :class:`~pipeline.defs.endpoints.InferenceClientConfig`: its endpoint (URL, key, model) is a
resource dependency from the environment, never config (why is in :mod:`pipeline.defs.resources`, whose
``build_resources`` wires them), and its fields tune the client, set in a run's ``resources.<name>.config``.
Without an endpoint, the embedder falls back to the local all-MiniLM-L6-v2 and the chat model to the
local extractive answerer. Their handles follow :mod:`pipeline.defs.resource_handles`.
"""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field, PrivateAttr

from pipeline.answer.client import HerokuChatModel
from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.protocol import ChatModel, GenerationSettings
from pipeline.defs.endpoints import ChatEndpoint, EmbeddingEndpoint, InferenceClientConfig, RerankEndpoint
from pipeline.defs.resource_handles import not_set_up_error, shared_handle
from pipeline.embedding import DEFAULT_BATCH_SIZE, Embedder, MiniLMEmbedder
from pipeline.embedding.contract import MAX_INPUTS_PER_REQUEST
from pipeline.embedding.remote import DEFAULT_CONCURRENT_REQUESTS, HerokuEmbedder
from pipeline.rerank.client import DEFAULT_MAX_DOCUMENT_TOKENS, RerankClient


class EmbedderResource(InferenceClientConfig):
    """Sentence embeddings: the embeddings endpoint when ``endpoint`` is set, else all-MiniLM-L6-v2 (int8 ONNX).

    The client fields (:class:`InferenceClientConfig` and those marked "Remote") tune the remote
    client; ``batch_size`` and ``threads`` the local model.

    Either way the chunker sizes chunks with the MiniLM tokenizer (:meth:`minilm_word_piece_counts`),
    so chunks and their IDs do not depend on the embedding mode. In remote mode the ONNX session
    is never built in the run process: the tokenizer is all it loads of the local model.
    """

    # A dependency, not config: from the environment only (see pipeline.defs.resources).
    # ResourceDependency is a descriptor to the type checker; pydantic takes None as the field's default.
    endpoint: dg.ResourceDependency[EmbeddingEndpoint | None] = None  # type: ignore[assignment]
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, description="Local model: texts per ONNX batch.")
    threads: int = Field(default=0, ge=0, description="Local model: onnxruntime intra-op threads; 0 = all cores.")
    inputs_per_request: int = Field(
        default=MAX_INPUTS_PER_REQUEST, ge=1, le=MAX_INPUTS_PER_REQUEST, description="Remote: inputs per request."
    )
    concurrent_requests: int = Field(
        default=DEFAULT_CONCURRENT_REQUESTS, ge=1, description="Remote: requests in flight at once."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Remote: the model's token limit (default: the published one); paced at 98%."
    )

    _embedder: Embedder | None = PrivateAttr(default=None)
    _minilm: MiniLMEmbedder | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        if self.endpoint is None:
            return "EmbedderResource(local)"
        return f"EmbedderResource(url={self.endpoint.url!r}, model_id={self.endpoint.model_id!r})"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        batch_size, threads = self.batch_size, self.threads
        # One MiniLM per process: the embedder in local mode, only its tokenizer in remote mode
        # (its session is built on the first embed, which remote mode never asks for).
        self._minilm = shared_handle(
            ("embedder", batch_size, threads), lambda: MiniLMEmbedder(batch_size=batch_size, threads=threads or None)
        )
        endpoint = self.endpoint
        if endpoint is None:
            self._embedder = self._minilm
            return
        self._embedder = self.build_client(
            HerokuEmbedder,
            endpoint,
            inputs_per_request=self.inputs_per_request,
            concurrent_requests=self.concurrent_requests,
            tokens_per_minute=self.tokens_per_minute,
        )

    def get(self) -> Embedder:
        """The embedder chunks and queries are embedded with."""
        if self._embedder is None:
            raise not_set_up_error(self)
        return self._embedder

    def local_embedder(self) -> MiniLMEmbedder | None:
        """The local model when it is the embedder (for the header-line vectors of the local rerank
        stand-in's features); None in remote mode, which never loads it."""
        embedder = self.get()
        return embedder if isinstance(embedder, MiniLMEmbedder) else None

    def minilm_word_piece_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text under the MiniLM tokenizer (tokenizer only, no ONNX session).

        Chunks are sized by them in both modes, so switching the embedding mode re-chunks nothing.
        """
        if self._minilm is None:
            raise not_set_up_error(self)
        return self._minilm.word_piece_counts(texts)

    def release_memory(self) -> None:
        """A step is done embedding: drop the local model's ONNX session, if built (the next embed builds it
        again), and hand the heap's free memory back to the OS."""
        if self._minilm is None:
            raise not_set_up_error(self)
        self._minilm.release_session()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # The remote embedder is this resource's own (its connection pool is closed); the MiniLM
        # one is shared with the process's other steps and left loaded.
        if isinstance(self._embedder, HerokuEmbedder):
            self._embedder.close()
        self._embedder = None
        self._minilm = None


class RerankResource(InferenceClientConfig):
    """The Heroku Inference rerank endpoint (or the local service that speaks its protocol).

    ``endpoint`` comes from the environment only; the fields tune the client, set in a run's
    ``resources.rerank.config``.
    """

    # A dependency, not config: from the environment only (see pipeline.defs.resources).
    endpoint: dg.ResourceDependency[RerankEndpoint]
    max_document_tokens: int | None = Field(
        default=DEFAULT_MAX_DOCUMENT_TOKENS,
        ge=1,
        description="Each candidate is cut to this many cl100k tokens (tiktoken) before sending; unset sends it whole.",
    )

    _client: RerankClient | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        return f"RerankResource(url={self.endpoint.url!r}, model_id={self.model_id!r})"

    @property
    def model_id(self) -> str:
        return self.endpoint.model_id

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self.build_client(RerankClient, self.endpoint, max_document_tokens=self.max_document_tokens)

    def get(self) -> RerankClient:
        if self._client is None:
            raise not_set_up_error(self)
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # Owned by this resource alone: its connection pool is closed.
        if self._client is not None:
            self._client.close()
            self._client = None


class ChatResource(InferenceClientConfig):
    """The chat model questions are answered with: the chat endpoint attached ``--as INFERENCE`` when
    ``endpoint`` is set, else the local extractive answerer.

    ``endpoint`` comes from the environment only; the fields tune the client and the generation, set
    in a run's ``resources.chat.config``. The generation settings are part of every cached answer's key.
    """

    # A dependency, not config: from the environment only (see pipeline.defs.resources).
    # ResourceDependency is a descriptor to the type checker; pydantic takes None as the field's default.
    endpoint: dg.ResourceDependency[ChatEndpoint | None] = None  # type: ignore[assignment]
    max_completion_tokens: int = Field(
        default=GenerationSettings.max_completion_tokens, ge=1, description="Longest answer, in completion tokens."
    )
    temperature: float = Field(
        default=GenerationSettings.temperature, ge=0, le=1, description="Sampling temperature; 0 answers alike."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="The model's token limit (default: the published one); paced at 98%."
    )

    _chat: ChatModel | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        if self.endpoint is None:
            return "ChatResource(local)"
        return f"ChatResource(url={self.endpoint.url!r}, model_id={self.endpoint.model_id!r})"

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(max_completion_tokens=self.max_completion_tokens, temperature=self.temperature)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            self._chat = ExtractiveChatModel()
            return
        self._chat = self.build_client(HerokuChatModel, endpoint, tokens_per_minute=self.tokens_per_minute)

    def get(self) -> ChatModel:
        """The chat model answers are completed by."""
        if self._chat is None:
            raise not_set_up_error(self)
        return self._chat

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # The endpoint client is this resource's own (its connection pool is closed); the extractive
        # answerer holds nothing to release.
        if isinstance(self._chat, HerokuChatModel):
            self._chat.close()
        self._chat = None
