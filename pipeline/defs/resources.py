"""Dagster resources: typed configuration for the stores, the embedder and the rerank endpoint.

:func:`build_resources` is the one place that wires environment variables into
resources. Variables that are set are passed as ``dg.EnvVar`` so the Dagster UI
shows the variable's name, never its value; unset ones fall back to the offline
defaults declared in ``pipeline/settings.py``.
"""


from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from pipeline import settings
from pipeline.embedding import DEFAULT_BATCH_SIZE, MiniLMEmbedder
from pipeline.rerank.client import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DOCUMENT_TOKENS,
    DEFAULT_MAX_TOTAL_SECONDS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    RerankClient,
)
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, state_url
from pipeline.store.vectors import DEFAULT_COLLECTION, ChromaConnection, VectorIndex

# Loaded models and open connections are per process: Dagster may build a resource
# more than once per step, and the MiniLM session takes a second to load.
_EMBEDDERS: dict[tuple[int, int], MiniLMEmbedder] = {}
_STATE_STORES: dict[str, StateStore] = {}
_LEXICAL_INDEXES: dict[str, LexicalIndex] = {}


class StateStoreResource(dg.ConfigurableResource):
    """Durable pipeline state: SQLite under ``data_dir`` unless ``database_url`` is set."""

    data_dir: str = Field(description="Directory for local state (state.db).")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; postgres:// is accepted.", repr=False)

    def __repr__(self) -> str:
        return f"StateStoreResource(backend={'postgresql' if self.database_url else 'sqlite'})"

    def open(self) -> StateStore:
        url = state_url(self.database_url, self.data_dir)
        if url not in _STATE_STORES:
            _STATE_STORES[url] = StateStore(url)
        return _STATE_STORES[url]


class ChromaResource(dg.ConfigurableResource):
    """The Chroma collection: local PersistentClient, or a server / Chroma Cloud when ``host`` is set."""

    data_dir: str
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    token: str | None = Field(default=None, repr=False)
    tenant: str | None = None
    database: str | None = None
    collection: str = Field(default=DEFAULT_COLLECTION, min_length=3, description="Chroma needs 3+ characters.")

    def __repr__(self) -> str:
        return f"ChromaResource({self.host or self.data_dir!r}, collection={self.collection!r})"

    def open(self, embedder: MiniLMEmbedder | None = None) -> VectorIndex:
        return VectorIndex(
            ChromaConnection(
                data_dir=self.data_dir,
                host=self.host,
                port=self.port,
                ssl=self.ssl,
                token=self.token,
                tenant=self.tenant,
                database=self.database,
                collection=self.collection,
            ),
            embedder,
        )

    @property
    def is_local(self) -> bool:
        return self.host is None


class EmbedderResource(dg.ConfigurableResource):
    """all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings, loaded from installed packages."""

    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = all cores.")

    def get(self) -> MiniLMEmbedder:
        key = (self.batch_size, self.threads)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = MiniLMEmbedder(batch_size=self.batch_size, threads=self.threads or None)
        return _EMBEDDERS[key]


class RerankResource(dg.ConfigurableResource):
    """The Heroku Inference rerank endpoint (or the local service that speaks its protocol).

    The fields below ``model_id`` tune the client; set them in a run's ``resources.rerank.config``.
    """

    url: str = Field(description="Base URL; requests go to {url}/v1/rerank.")
    api_key: str = Field(description="Bearer token (RERANK_KEY).", repr=False)
    model_id: str = Field(description="cohere-rerank-3-5 or amazon-rerank-1-0.")
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="The model's limit (default: the published one, 250 or 200); requests are paced at 98% of it.",
    )
    connect_timeout_seconds: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, description="Longest wait to open a connection."
    )
    read_timeout_seconds: float = Field(
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        gt=0,
        description="Longest wait for the response (and between its bytes); a request that times out is retried.",
    )
    max_document_tokens: int | None = Field(
        default=DEFAULT_MAX_DOCUMENT_TOKENS,
        ge=1,
        description="Each candidate is cut to this many cl100k tokens (tiktoken) before sending; unset sends it whole.",
    )
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, description="Attempts per request, retries included.")
    max_total_seconds: float = Field(
        default=DEFAULT_MAX_TOTAL_SECONDS,
        gt=0,
        description="Time budget per request, rate-limit waits and retries included; past it the query fails.",
    )

    _client: Any = PrivateAttr(default=None)

    def __repr__(self) -> str:
        return f"RerankResource(url={self.url!r}, model_id={self.model_id!r})"

    def client(self) -> RerankClient:
        if self._client is None:
            self._client = RerankClient(
                self.url,
                self.api_key,
                self.model_id,
                timeout=httpx.Timeout(self.read_timeout_seconds, connect=self.connect_timeout_seconds),
                requests_per_minute=self.requests_per_minute,
                max_attempts=self.max_attempts,
                max_total_seconds=self.max_total_seconds,
                max_document_tokens=self.max_document_tokens,
            )
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()


class PipelineFilesResource(dg.ConfigurableResource):
    """Where the pipeline reads its inputs and writes its output files and the lexical index."""

    data_dir: str
    sources_path: str
    queries_path: str
    labelled_queries_path: str

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
        """The BM25 index under the data directory (kept loaded for the process)."""
        key = str(Path(self.data_dir).resolve())
        if key not in _LEXICAL_INDEXES:
            _LEXICAL_INDEXES[key] = LexicalIndex(key)
        return _LEXICAL_INDEXES[key]


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
        ),
        "state_store": StateStoreResource(data_dir=data_dir, database_url=from_env("DATABASE_URL")),
        "chroma": ChromaResource(
            data_dir=data_dir,
            host=from_env("CHROMA_HOST"),
            port=dg.EnvVar.int("CHROMA_PORT") if settings.is_set("CHROMA_PORT") else int(settings.value("CHROMA_PORT")),
            ssl=settings.value("CHROMA_SSL").lower() in ("1", "true", "yes"),
            token=from_env("CHROMA_TOKEN"),
            tenant=from_env("CHROMA_TENANT"),
            database=from_env("CHROMA_DATABASE"),
        ),
        "embedder": EmbedderResource(),
        "rerank": RerankResource(
            url=from_env("RERANK_URL"),
            api_key=from_env("RERANK_KEY"),
            model_id=from_env("RERANK_MODEL_ID"),
        ),
    }
