"""The Chroma collections holding chunk vectors, one per embedding model.

Local by default (``PersistentClient`` under the data directory); a Chroma server or
Chroma Cloud when a host is configured. Vectors of two models cannot share a collection
(all-MiniLM-L6-v2's have 384 dimensions, Cohere's 1,024, and neither means anything in the
other's space), so each model has its own, named after the configured base collection and the
model (:func:`collection_name`) and recording the model in its metadata. Chroma is a derived
index here: the state store keeps every model's vectors, so ``pipeline.ingest.vectors.sync_vectors``
rebuilds a wiped collection (a Heroku dyno restart) without re-embedding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.embedding import DIMENSIONS, MODEL_NAME, MiniLMEmbedder

DEFAULT_COLLECTION = "documentation"
# HNSW candidate-list size at query time (Chroma's default is 100). A query asks for 100
# neighbours, and at 100 the search is approximate: a collection rebuilt in another insertion
# order (the restore after a dyno restart) then returns other neighbours, so other candidates,
# other context sets, and rerank requests the cache cannot answer (the demo site: 2 of 12
# queries). On 12,715 clustered synthetic vectors recall@100 was 0.74 at 100, 0.97 at 400 and
# 0.998 at 1000, for a few milliseconds more per query; real text embeddings are easier.
HNSW_EF_SEARCH = 1000
# HNSW candidate-list size while inserting (Chroma's default is 100). Each insert searches the
# graph for its neighbours with it, and inserts are what a cold ingest and a restore after a dyno
# restart spend in Chroma, growing with the collection (docs/scaling.md). At 64, 30,720 random
# vectors went in 1.8 times faster than at 100 (benchmarks/chroma_inserts.py), and on the
# PostgreSQL manual's 12,711 vectors recall@100 at the ef_search above stayed 0.9997 (0.9999 at 100).
HNSW_EF_CONSTRUCTION = 64
# Chroma's rules for a collection name: 3 to 63 characters of [a-zA-Z0-9._-], starting and
# ending with a letter or digit, without "..".
MAX_COLLECTION_NAME = 63
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
_MODEL_DIGEST_LENGTH = 8


@dataclass(frozen=True)
class ChromaConnection:
    """Where the collection lives; ``host=None`` means a local persistent store."""

    data_dir: str = "./data"
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    token: str | None = None
    tenant: str | None = None
    database: str | None = None
    collection: str = DEFAULT_COLLECTION

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.host else str(Path(self.data_dir) / "chroma")
        return f"ChromaConnection({where!r}, collection={self.collection!r})"


def collection_name(base: str, model: str) -> str:
    """The collection of ``model``'s vectors: ``base``, a dash and the model's name as Chroma allows it.

    A remote model's name (``cohere-embed-multilingual@us.inference.heroku.com``) has characters
    Chroma refuses; they become dashes, and then a short hash of the full name is added so that two
    models never share a collection.
    """
    slug = re.sub(r"\.{2,}", ".", _NOT_ALLOWED.sub("-", model)).strip("._-")
    name = f"{base}-{slug}"
    if slug == model and len(name) <= MAX_COLLECTION_NAME:
        return name
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:_MODEL_DIGEST_LENGTH]
    room = MAX_COLLECTION_NAME - len(base) - len(digest) - 2
    slug = slug[: max(room, 0)].rstrip("._-")
    return "-".join(part for part in (base, slug, digest) if part)


@dataclass(frozen=True)
class VectorHit:
    chunk_id: str
    score: float  # cosine similarity, 1 is identical
    url: str | None = None  # the chunk's page, when the query asked for it


def _client(connection: ChromaConnection):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if connection.host is None:
        path = Path(connection.data_dir) / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    headers = {"x-chroma-token": connection.token} if connection.token else None
    optional = {
        key: value for key, value in (("tenant", connection.tenant), ("database", connection.database)) if value
    }
    return chromadb.HttpClient(
        host=connection.host,
        port=connection.port,
        ssl=connection.ssl,
        headers=headers,
        settings=settings,
        **optional,
    )


class MiniLMEmbeddingFunction:
    """Chroma embedding function over :class:`MiniLMEmbedder`.

    Registered on the all-MiniLM-L6-v2 collection so anyone opening it with Chroma directly (for
    example ``collection.query(query_texts=[...])``) embeds queries with the same model the
    pipeline indexed with.
    """

    def __init__(self, embedder: MiniLMEmbedder | None = None) -> None:
        self._embedder = embedder or MiniLMEmbedder()

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002 - Chroma's protocol name
        return list(self._embedder.embed(list(input)))

    def embed_query(self, input: Sequence[str]) -> list[np.ndarray]:  # noqa: A002
        return self(input)

    @staticmethod
    def name() -> str:
        return "docs_to_answer_minilm"

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL_NAME, "dimensions": DIMENSIONS}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        return None

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        return None


def _register_embedding_function() -> None:
    from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

    if MiniLMEmbeddingFunction.name() not in known_embedding_functions:
        register_embedding_function(MiniLMEmbeddingFunction)


class VectorIndex:
    """Upsert, delete and query chunk vectors in the Chroma collection of one embedding model.

    The all-MiniLM-L6-v2 collection carries its embedding function (over ``embedder``, or a new
    MiniLMEmbedder, which loads its model only when first used), so anyone opening it with Chroma
    directly can query by text. Other
    models' collections take vectors only: the pipeline embeds through its own client.
    """

    def __init__(self, connection: ChromaConnection, model: str, embedder: MiniLMEmbedder | None = None) -> None:
        local = model == MODEL_NAME
        if embedder is not None and not local:
            raise ValueError(f"the all-MiniLM-L6-v2 embedding function cannot embed for model {model!r}")
        if local:
            _register_embedding_function()
        self.connection = connection
        self.model = model
        self.client = _client(connection)
        self.collection = self.client.get_or_create_collection(
            name=collection_name(connection.collection, model),
            embedding_function=MiniLMEmbeddingFunction(embedder) if local else None,
            configuration={
                "hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH, "ef_construction": HNSW_EF_CONSTRUCTION}
            },
            metadata={"embedding_model": model},
        )
        hnsw = self.collection.configuration.get("hnsw")
        if hnsw and hnsw.get("ef_search") != HNSW_EF_SEARCH:
            # An existing collection keeps the configuration it was created with; ef_search can be changed,
            # ef_construction cannot (a collection rebuilt from the state store gets it).
            self.collection.modify(configuration={"hnsw": {"ef_search": HNSW_EF_SEARCH}})
        self.max_batch_size = self.client.get_max_batch_size()

    def __repr__(self) -> str:
        return f"VectorIndex({self.connection!r}, model={self.model!r})"

    @property
    def name(self) -> str:
        return self.collection.name

    def drop_collections(self, models: Iterable[str]) -> list[str]:
        """Delete the collections of ``models`` (their vectors were pruned from the state store), and
        the base collection itself, which code before per-model collections filled; returns the names
        of those that existed."""
        names = [collection_name(self.connection.collection, model) for model in models if model != self.model]
        existing = {collection.name for collection in self.client.list_collections()}
        dropped = [name for name in (*names, self.connection.collection) if name in existing]
        for name in dropped:
            self.client.delete_collection(name)
        return dropped

    def count(self) -> int:
        return self.collection.count()

    def ids(self, source: str | None = None) -> set[str]:
        where = {"source": source} if source is not None else None
        return set(self.collection.get(where=where, include=[])["ids"])

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[np.ndarray] | np.ndarray,
        documents: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
    ) -> None:
        """Upsert in batches no larger than the client's maximum batch size."""
        step = self.max_batch_size
        for start in range(0, len(ids), step):
            stop = start + step
            self.collection.upsert(
                ids=list(ids[start:stop]),
                embeddings=np.asarray(embeddings[start:stop], dtype=np.float32),
                documents=list(documents[start:stop]),
                metadatas=[dict(metadata) for metadata in metadatas[start:stop]],
            )

    def delete(self, ids: Iterable[str]) -> int:
        doomed = list(ids)
        for start in range(0, len(doomed), self.max_batch_size):
            self.collection.delete(ids=doomed[start : start + self.max_batch_size])
        return len(doomed)

    def query(self, embedding: np.ndarray, k: int, *, with_urls: bool = False) -> list[VectorHit]:
        """The ``k`` nearest chunks, best first; ``with_urls`` also reads each one's page URL from its metadata."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        result = self.collection.query(
            query_embeddings=np.asarray([embedding], dtype=np.float32),
            n_results=k,
            include=["distances", "metadatas"] if with_urls else ["distances"],
        )
        metadatas = result["metadatas"][0] if with_urls and result["metadatas"] else [None] * len(result["ids"][0])
        # Chroma's cosine distance is 1 - cosine similarity.
        return [
            VectorHit(chunk_id=chunk_id, score=1.0 - float(distance), url=str(metadata["url"]) if metadata else None)
            for chunk_id, distance, metadata in zip(result["ids"][0], result["distances"][0], metadatas, strict=True)
        ]
