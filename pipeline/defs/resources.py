"""Dagster resources: typed configuration for the stores, the embedder, the rerank endpoint and the chat model.

:func:`build_resources` is the one place that wires environment variables into
resources. Where requests go and the credentials they carry (``RERANK_*``, ``EMBEDDING_*``, ``INFERENCE_*``
(:mod:`pipeline.defs.endpoints`), ``DATABASE_URL``, the ``CHROMA_*`` server settings) are
resource dependencies read from the environment, not config fields: anyone who may launch a run
could otherwise point ``resources.rerank.config.url`` at another host while the key still came
from ``RERANK_KEY``. Run config that names them is rejected. They are
checked when the resource is set up for a run, before any request, so a key with a stray
newline fails the run with a message naming the variable. The other paths are passed as
``dg.EnvVar`` so the Dagster UI shows the variable's name; unset ones fall back to the
offline defaults declared in ``pipeline/settings.py``.

One vocabulary for every resource. ``get()`` is the one accessor: it returns the handle the
resource holds (``StateStore``, ``VectorIndex``, an ``Embedder``, ``RerankClient``, a ``ChatModel``). One
lifecycle: the handle is a ``PrivateAttr`` built in ``setup_for_execution`` (after the
credentials are checked) and released in ``teardown_after_execution``. Handles that are
expensive to build and safe to share (the MiniLM session takes about a second to load, the
state store runs its schema check on open, the BM25 index loads from disk) come from
:func:`_shared`, one cache per process, because Dagster may set a resource up more than once per
step; teardown drops the resource's reference to them but leaves them open for the next step.
Handles a resource owns alone (the rerank client, the remote embedder, the chat endpoint
client and their connection pools) are closed in teardown. ``PipelineFilesResource`` is about the files under the data
directory: besides ``write_output`` its one handle, the BM25 index stored there, has the clearly named accessor
``lexical_index()`` rather than ``get()``, since the resource is not that index.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr

from pipeline import settings
from pipeline.answer.client import HerokuChatModel
from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.protocol import ChatModel, GenerationSettings
from pipeline.credentials import check_secret
from pipeline.defs.endpoints import ChatEndpoint, EmbeddingEndpoint, InferenceClientConfig, RerankEndpoint
from pipeline.embedding import DEFAULT_BATCH_SIZE, Embedder, MiniLMEmbedder
from pipeline.embedding.contract import MAX_INPUTS_PER_REQUEST
from pipeline.embedding.remote import DEFAULT_CONCURRENT_REQUESTS, HerokuEmbedder
from pipeline.rerank.client import DEFAULT_MAX_DOCUMENT_TOKENS, RerankClient
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, state_url
from pipeline.store.vectors import DEFAULT_COLLECTION, ChromaConnection, VectorIndex

Handle = TypeVar("Handle")

# The per-process cache of shared handles (see the module docstring), keyed by kind and settings.
_SHARED: dict[tuple[object, ...], Any] = {}


def _shared(key: tuple[object, ...], build: Callable[[], Handle]) -> Handle:
    """The process's handle for ``key``, built by ``build`` the first time it is asked for."""
    if key not in _SHARED:
        _SHARED[key] = build()
    handle: Handle = _SHARED[key]
    return handle


def _not_set_up(resource: dg.ConfigurableResource) -> RuntimeError:
    return RuntimeError(f"{type(resource).__name__} is used before Dagster set it up for execution")


class StateStoreResource(dg.ConfigurableResource):
    """Durable pipeline state: SQLite under ``data_dir`` unless ``database_url`` (DATABASE_URL) is set."""

    data_dir: str = Field(description="Directory for local state (state.db).")
    # A dependency, not config: from the environment only (see the module docstring).
    # ResourceDependency is a descriptor to the type checker; pydantic takes None as the field's default.
    database_url: dg.ResourceDependency[str | None] = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StateStoreResource(backend={'postgresql' if self.database_url else 'sqlite'})"

    _store: StateStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.database_url:
            check_secret("DATABASE_URL", self.database_url)
        url = state_url(self.database_url, self.data_dir)
        self._store = _shared(("state_store", url), lambda: StateStore(url))

    def get(self) -> StateStore:
        if self._store is None:
            raise _not_set_up(self)
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._store = None  # shared with the process's other steps: left open


@dataclass(frozen=True)
class ChromaServer:
    """A Chroma server or Chroma Cloud.

    From CHROMA_HOST, CHROMA_PORT, CHROMA_SSL, CHROMA_TOKEN, CHROMA_TENANT and CHROMA_DATABASE."""

    host: str
    port: int = 8000
    ssl: bool = False
    token: str | None = None
    tenant: str | None = None
    database: str | None = None

    def __repr__(self) -> str:
        return f"ChromaServer({self.host!r}, port={self.port})"

    @classmethod
    def from_settings(cls) -> "ChromaServer | None":
        """The server the environment names; None (the local store) when CHROMA_HOST is unset."""
        if not settings.is_set("CHROMA_HOST"):
            return None
        return cls(
            host=settings.string("CHROMA_HOST"),
            port=settings.integer("CHROMA_PORT", minimum=1),
            ssl=settings.string("CHROMA_SSL").lower() in ("1", "true", "yes"),
            token=settings.value("CHROMA_TOKEN"),
            tenant=settings.value("CHROMA_TENANT"),
            database=settings.value("CHROMA_DATABASE"),
        )

    def check(self) -> None:
        check_secret("CHROMA_HOST", self.host)
        if self.token:
            check_secret("CHROMA_TOKEN", self.token)


class ChromaResource(dg.ConfigurableResource):
    """The Chroma collections, one per embedding model: local PersistentClient under ``data_dir``, or
    ``server`` when there is one."""

    data_dir: str
    # A dependency, not config: from the environment only (see the module docstring).
    # ResourceDependency is a descriptor to the type checker; pydantic takes None as the field's default.
    server: dg.ResourceDependency[ChromaServer | None] = None  # type: ignore[assignment]
    collection: str = Field(
        default=DEFAULT_COLLECTION,
        min_length=3,
        max_length=40,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
        description=(
            "Base name of the collections: each embedding model's is this, a dash and the model's name "
            "(Chroma allows 63 characters of letters, digits, '.', '_' and '-')."
        ),
    )

    def __repr__(self) -> str:
        where = self.server.host if self.server else self.data_dir
        return f"ChromaResource({where!r}, collection={self.collection!r})"

    # Where the collections live; a VectorIndex is opened by get(), which is given the embedder.
    _connection: ChromaConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        server = self.server
        if server is not None:
            server.check()
        self._connection = ChromaConnection(
            data_dir=self.data_dir,
            host=server.host if server else None,
            port=server.port if server else 8000,
            ssl=server.ssl if server else False,
            token=server.token if server else None,
            tenant=server.tenant if server else None,
            database=server.database if server else None,
            collection=self.collection,
        )

    def get(self, embedder: Embedder) -> VectorIndex:
        """The collection of ``embedder``'s model (the configured one: EmbedderResource's)."""
        if self._connection is None:
            raise _not_set_up(self)
        local = embedder if isinstance(embedder, MiniLMEmbedder) else None
        return VectorIndex(self._connection, embedder.model, local)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._connection = None


class EmbedderResource(InferenceClientConfig):
    """Sentence embeddings: the embeddings endpoint when ``endpoint`` is set, else all-MiniLM-L6-v2 (int8 ONNX).

    The client fields (:class:`InferenceClientConfig` and those marked "Remote") tune the remote
    client; ``batch_size`` and ``threads`` the local model.

    Either way the chunker sizes chunks with the MiniLM tokenizer (:meth:`minilm_word_piece_counts`),
    so chunks and their IDs do not depend on the embedding mode. In remote mode the ONNX session
    is never built in the run process: the tokenizer is all it loads of the local model.
    """

    # A dependency, not config: from the environment only (see the module docstring).
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
        self._minilm = _shared(
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
            raise _not_set_up(self)
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
            raise _not_set_up(self)
        return self._minilm.word_piece_counts(texts)

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

    # A dependency, not config: from the environment only (see the module docstring).
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
            raise _not_set_up(self)
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

    # A dependency, not config: from the environment only (see the module docstring).
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
            raise _not_set_up(self)
        return self._chat

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # The endpoint client is this resource's own (its connection pool is closed); the extractive
        # answerer holds nothing to release.
        if isinstance(self._chat, HerokuChatModel):
            self._chat.close()
        self._chat = None


class PipelineFilesResource(dg.ConfigurableResource):
    """Where the pipeline reads its inputs and writes its output files and the lexical index."""

    data_dir: str
    sources_path: str
    queries_path: str
    labelled_queries_path: str
    unanswerable_queries_path: str

    _lexical_index: LexicalIndex | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        directory = str(Path(self.data_dir).resolve())
        self._lexical_index = _shared(("lexical_index", directory), lambda: LexicalIndex(directory))

    def write_output(self, name: str, text: str) -> Path:
        """Write ``name`` in the data directory atomically: readers never see a half-written file."""
        directory = Path(self.data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
        return path.resolve()

    def lexical_index(self) -> LexicalIndex:
        """The BM25 index under the data directory (shared by the process's steps)."""
        if self._lexical_index is None:
            raise _not_set_up(self)
        return self._lexical_index

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._lexical_index = None  # shared with the process's other steps: left loaded


def from_env(name: str) -> Any:
    """``dg.EnvVar(name)`` when the variable is set, else the setting's offline default."""
    return dg.EnvVar(name) if settings.is_set(name) else settings.SETTINGS[name].default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    data_dir = from_env("PIPELINE_DATA_DIR")
    return {
        "files": PipelineFilesResource(
            data_dir=data_dir,
            sources_path=from_env("PIPELINE_SOURCES"),
            queries_path=from_env("PIPELINE_QUERIES"),
            labelled_queries_path=from_env("PIPELINE_LABELLED_QUERIES"),
            unanswerable_queries_path=from_env("PIPELINE_UNANSWERABLE_QUERIES"),
        ),
        "state_store": StateStoreResource(data_dir=data_dir, database_url=settings.value("DATABASE_URL")),
        "chroma": ChromaResource(data_dir=data_dir, server=ChromaServer.from_settings()),
        "embedder": EmbedderResource(endpoint=EmbeddingEndpoint.from_settings()),
        "rerank": RerankResource(endpoint=RerankEndpoint.from_settings()),
        "chat": ChatResource(endpoint=ChatEndpoint.from_settings()),
    }
