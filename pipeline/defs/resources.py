"""Dagster resources for the stores and the data directory, and :func:`build_resources`, which wires every resource.

:func:`build_resources` is the one place that wires environment variables into
resources (these and the inference ones in :mod:`pipeline.defs.inference_resources`). Where requests go
and the credentials they carry (``RERANK_*``, ``EMBEDDING_*``, ``INFERENCE_*``
(:mod:`pipeline.defs.endpoints`), ``DATABASE_URL``, the ``CHROMA_*`` server settings) are
resource dependencies read from the environment, not config fields: anyone who may launch a run
could otherwise point ``resources.rerank.config.url`` at another host while the key still came
from ``RERANK_KEY``. Run config that names them is rejected. They are
checked when the resource is set up for a run, before any request, so a key with a stray
newline fails the run with a message naming the variable. The other paths are passed as
``dg.EnvVar`` so the Dagster UI shows the variable's name; unset ones fall back to the
offline defaults declared in ``pipeline/settings.py``.

Every resource follows the one vocabulary and lifecycle of :mod:`pipeline.defs.resource_handles`.
``PipelineFilesResource`` is about the files under the data directory: besides ``write_output`` its
one handle, the BM25 index stored there, has the clearly named accessor ``lexical_index()`` rather
than ``get()``, since the resource is not that index.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from pipeline import settings
from pipeline.credentials import check_secret
from pipeline.defs.endpoints import ChatEndpoint, EmbeddingEndpoint, RerankEndpoint
from pipeline.defs.inference_resources import ChatResource, EmbedderResource, RerankResource
from pipeline.defs.resource_handles import not_set_up_error, shared_handle
from pipeline.embedding import Embedder, MiniLMEmbedder
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, state_url
from pipeline.store.vectors import DEFAULT_COLLECTION, ChromaConnection, VectorIndex


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
        self._store = shared_handle(("state_store", url), lambda: StateStore(url))

    def get(self) -> StateStore:
        if self._store is None:
            raise not_set_up_error(self)
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
            raise not_set_up_error(self)
        local = embedder if isinstance(embedder, MiniLMEmbedder) else None
        return VectorIndex(self._connection, embedder.model, local)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._connection = None


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
        self._lexical_index = shared_handle(("lexical_index", directory), lambda: LexicalIndex(directory))

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
            raise not_set_up_error(self)
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
