"""Vectors keyed by embedding model, on SQLite and PostgreSQL with real Chroma collections.

Switching the embedding model (the local all-MiniLM-L6-v2 and a remote model, played here by a
deterministic hashed embedder of another dimension) embeds each distinct text once per model,
switching back embeds nothing, and neither switch loses a vector; a switch that fails midway
resumes where it stopped; a model no longer configured is pruned after the retention period.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from datetime import timedelta

import chromadb
import numpy as np
import pytest
import sqlalchemy as sa
from chromadb.config import Settings

from pipeline.embedding import DIMENSIONS, MODEL_NAME, MiniLMEmbedder
from pipeline.inference import InferenceServerError, InferenceUnauthorized
from pipeline.ingest.vectors import IndexReport, index_chunks
from pipeline.store.records import StoredChunk
from pipeline.store.schema import embedding_models
from pipeline.store.sql import utcnow
from pipeline.store.state import StateStore
from pipeline.store.vectors import (
    DEFAULT_COLLECTION,
    MAX_COLLECTION_NAME,
    ChromaConnection,
    VectorIndex,
    collection_name,
)

# A remote model's name: model ID @ endpoint host and port.
REMOTE_MODEL = "hashed-embed-16@127.0.0.1:8431"
REMOTE_DIMENSIONS = 16
SOURCE = "docs"
RETENTION = timedelta(days=14)


class HashedEmbedder:
    """A deterministic remote model: unit vectors of 16 dimensions hashed from the text, in batches of 3."""

    def __init__(self, model: str = REMOTE_MODEL) -> None:
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    @staticmethod
    def vector(text: str) -> np.ndarray:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        raw = np.frombuffer(digest[:REMOTE_DIMENSIONS], dtype=np.uint8).astype(np.float32) - 127.5
        return raw / np.linalg.norm(raw)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vector(text) for text in texts])

    def iter_document_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        for start in range(0, len(texts), 3):
            positions = list(range(start, min(start + 3, len(texts))))
            yield positions, self.embed_queries([texts[p] for p in positions])


class Recording:
    """Hands texts to ``embedder`` and records each text embedded; on the calls in ``failures`` it
    raises that error once ``batches_before_failure`` batches of the call were embedded."""

    def __init__(self, embedder, failures: dict[int, Exception] | None = None, batches_before_failure: int = 0) -> None:
        self.embedder = embedder
        self.failures = failures or {}
        self.batches_before_failure = batches_before_failure
        self.embedded_by_call: list[list[str]] = []

    @property
    def embedded(self) -> list[str]:
        return [text for call in self.embedded_by_call for text in call]

    @property
    def calls(self) -> int:
        return len(self.embedded_by_call)

    @property
    def model(self) -> str:
        return self.embedder.model

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed_queries(texts)

    def iter_document_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        embedded: list[str] = []
        self.embedded_by_call.append(embedded)
        failure = self.failures.get(self.calls)
        for count, (positions, vectors) in enumerate(self.embedder.iter_document_batches(texts)):
            if failure is not None and count == self.batches_before_failure:
                raise failure
            embedded.extend(texts[position] for position in positions)
            yield positions, vectors


def _chunks() -> list[StoredChunk]:
    """Three pages of four chunks; the third page repeats two texts of the first: ten distinct texts."""
    topics = {
        "http://d/pool.html": ["pooling", "max_connections", "idle timeouts", "pgbouncer"],
        "http://d/vacuum.html": ["vacuum", "autovacuum", "dead tuples", "freezing"],
        "http://d/copy.html": ["pooling", "max_connections", "COPY FROM", "COPY TO"],
    }
    return [
        StoredChunk(
            f"{url.rsplit('/', 1)[1]}-{position}",
            SOURCE,
            url,
            url,
            ("Guide",),
            f"All about {topic}.",
            f"Guide\nAll about {topic}.",
            5,
            position,
        )
        for url, names in topics.items()
        for position, topic in enumerate(names)
    ]


DISTINCT_TEXTS = sorted({chunk.embedding_text for chunk in _chunks()})


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture
def chunked(store: StateStore) -> StateStore:
    for url in sorted({chunk.url for chunk in _chunks()}):
        page = [chunk for chunk in _chunks() if chunk.url == url]
        store.chunks.replace(source=SOURCE, url=url, new_chunks=page, chunked_key="k")
    return store


def _index(
    store: StateStore, tmp_path, embedder, minilm: MiniLMEmbedder | None = None, **options
) -> tuple[IndexReport, VectorIndex]:
    local = minilm if embedder.model == MODEL_NAME else None
    vectors = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), embedder.model, local)
    report = index_chunks(store, vectors, embedder, SOURCE, retention=options.pop("retention", RETENTION), **options)
    return report, vectors


def _collection(vectors: VectorIndex) -> dict[str, tuple[str, np.ndarray]]:
    got = vectors.collection.get(include=["documents", "embeddings"])
    return {
        chunk_id: (document, np.asarray(embedding, dtype=np.float32))
        for chunk_id, document, embedding in zip(got["ids"], got["documents"], got["embeddings"], strict=True)
    }


def _stored(store: StateStore, model: str) -> dict[str, bytes]:
    embedded = store.embeddings.embedded_by_id(model, store.chunks.ids())
    return {chunk_id: row.embedding.tobytes() for chunk_id, row in embedded.items()}


def test_switching_models_back_and_forth_embeds_each_text_once_per_model_and_loses_nothing(chunked, tmp_path, minilm):
    store = chunked
    chunk_ids = store.chunks.ids()
    local, remote = Recording(minilm), Recording(HashedEmbedder())

    report, local_index = _index(store, tmp_path, local, minilm)
    assert sorted(local.embedded) == DISTINCT_TEXTS  # the repeated texts embedded once
    assert (report.embedding_model, report.texts_embedded, report.chunks_embedded) == (
        MODEL_NAME,
        len(DISTINCT_TEXTS),
        len(chunk_ids),
    )
    local_vectors = _stored(store, MODEL_NAME)
    assert set(local_vectors) == chunk_ids

    report, remote_index = _index(store, tmp_path, remote)
    assert sorted(remote.embedded) == DISTINCT_TEXTS
    assert (report.embedding_model, report.texts_embedded, report.vectors_total) == (
        REMOTE_MODEL,
        len(DISTINCT_TEXTS),
        len(chunk_ids),
    )
    in_remote = _collection(remote_index)
    assert set(in_remote) == chunk_ids
    chunks = store.chunks.by_id(chunk_ids)
    for chunk_id, (document, embedding) in in_remote.items():
        assert document == chunks[chunk_id].text
        np.testing.assert_allclose(embedding, HashedEmbedder.vector(chunks[chunk_id].embedding_text), atol=1e-6)
    # Two collections, one per model, each recording its model; the first model's vectors are all kept.
    assert remote_index.name != local_index.name and remote_index.collection.metadata["embedding_model"] == REMOTE_MODEL
    assert _stored(store, MODEL_NAME) == local_vectors

    report, local_index = _index(store, tmp_path, local, minilm)  # back: nothing to embed
    assert len(local.embedded) == len(DISTINCT_TEXTS) and report.texts_embedded == report.chunks_embedded == 0
    in_local = _collection(local_index)
    assert set(in_local) == set(local_vectors)
    for chunk_id, (_, embedding) in in_local.items():  # Chroma normalises what it is given: the last bits differ
        np.testing.assert_allclose(embedding, np.frombuffer(local_vectors[chunk_id], dtype="<f4"), atol=1e-6)
    report, remote_index = _index(store, tmp_path, remote)  # and forth again: nothing either
    assert len(remote.embedded) == len(DISTINCT_TEXTS) and report.texts_embedded == 0
    assert set(_collection(remote_index)) == chunk_ids

    models = store.embeddings.models()
    assert {name: model.dimensions for name, model in models.items()} == {
        MODEL_NAME: DIMENSIONS,
        REMOTE_MODEL: REMOTE_DIMENSIONS,
    }
    # The local rerank stand-in reuses only the local model's vectors, whatever model embeds the chunks.
    known = dict(store.embeddings.iter_embedded_texts())
    assert set(known) == set(DISTINCT_TEXTS) and {vector.shape for vector in known.values()} == {(DIMENSIONS,)}
    # Each collection answers queries in its own model's space.
    [hit, *_] = remote_index.query(HashedEmbedder.vector("Guide\nAll about vacuum."), k=3)
    assert hit.chunk_id == "vacuum.html-0" and hit.score == pytest.approx(1.0, abs=1e-5)
    [hit, *_] = local_index.query(minilm.embed_queries(["Guide\nAll about vacuum."])[0], k=3)
    assert hit.chunk_id == "vacuum.html-0" and hit.score == pytest.approx(1.0, abs=1e-5)


def test_a_switch_that_fails_midway_keeps_what_was_embedded_and_the_next_run_embeds_the_rest(chunked, tmp_path):
    store = chunked
    # The endpoint fails (after the client's retries) once two batches (six texts) of the first window are embedded.
    failing = Recording(
        HashedEmbedder(), failures={1: InferenceServerError("upstream 503", status_code=503)}, batches_before_failure=2
    )
    report, vectors = _index(store, tmp_path, failing, save_every=1, window=8)
    embedded_before = set(failing.embedded)
    assert not report.complete and report.embedding_errors == {"http_503": 1} and not report.configuration_error
    # The second window (the chunks after the first eight) is embedded although the first failed.
    first, second = failing.embedded_by_call
    assert len(first) == 6 and second and len(embedded_before) == report.texts_embedded < len(DISTINCT_TEXTS)
    assert report.texts_pending == len(DISTINCT_TEXTS) - len(embedded_before)
    assert store.embeddings.count(REMOTE_MODEL) == len(embedded_before)
    indexed = {chunk_id for chunk_id, (_, _) in _collection(vectors).items()}
    chunks = store.chunks.by_id(store.chunks.ids())
    assert indexed == {chunk_id for chunk_id, chunk in chunks.items() if chunk.embedding_text in embedded_before}
    message = report.failure(SOURCE)
    assert "http_503 ×1" in message and f"{report.texts_pending} texts have no vector yet" in message

    resumed = Recording(HashedEmbedder())
    report, vectors = _index(store, tmp_path, resumed)
    assert report.complete and sorted(resumed.embedded) == sorted(set(DISTINCT_TEXTS) - embedded_before)
    assert set(_collection(vectors)) == store.chunks.ids()


def test_a_refused_key_ends_the_embedding_and_a_crash_keeps_what_was_saved(chunked, tmp_path):
    store = chunked
    refused = Recording(HashedEmbedder(), failures={1: InferenceUnauthorized("401 from the endpoint", status_code=401)})
    report, _ = _index(store, tmp_path, refused, window=4)
    # Every request would be refused alike: the first window's failure ends the run.
    assert (refused.calls, report.configuration_error, report.embedding_errors) == (1, True, {"http_401": 1})
    assert report.texts_pending == len(DISTINCT_TEXTS) and store.embeddings.count(REMOTE_MODEL) == 0

    crashing = Recording(
        HashedEmbedder(), failures={1: RuntimeError("the worker is going down")}, batches_before_failure=1
    )
    with pytest.raises(RuntimeError):
        _index(store, tmp_path, crashing, save_every=100)
    # The batch embedded before the crash is saved, although fewer than save_every texts were.
    assert store.embeddings.count(REMOTE_MODEL) == len(crashing.embedded) == 3
    resumed = Recording(HashedEmbedder())
    assert _index(store, tmp_path, resumed)[0].texts_embedded == len(DISTINCT_TEXTS) - 3
    assert set(resumed.embedded).isdisjoint(crashing.embedded)


def _age(store: StateStore, model: str, by: timedelta) -> None:
    with store.transaction() as connection:
        connection.execute(
            sa.update(embedding_models)
            .where(embedding_models.c.model == model)
            .values(configured_at=embedding_models.c.configured_at - by)
        )


def _chroma_collections(tmp_path) -> set[str]:
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    return {collection.name for collection in client.list_collections()}


def test_a_model_not_configured_for_longer_than_the_retention_is_pruned_with_its_collection(chunked, tmp_path, minilm):
    store = chunked
    _, remote_index = _index(store, tmp_path, HashedEmbedder())
    report, local_index = _index(store, tmp_path, minilm, minilm)
    assert report.models_pruned == () and store.embeddings.count(REMOTE_MODEL) == len(DISTINCT_TEXTS)

    _age(store, REMOTE_MODEL, RETENTION + timedelta(hours=1))
    report, _ = _index(store, tmp_path, minilm, minilm)
    assert report.models_pruned == (REMOTE_MODEL,) and report.vectors_pruned == len(DISTINCT_TEXTS)
    assert report.collections_dropped == (remote_index.name,)
    assert set(store.embeddings.models()) == {MODEL_NAME} and store.embeddings.count(REMOTE_MODEL) == 0
    assert _chroma_collections(tmp_path) == {local_index.name}
    assert store.embeddings.count(MODEL_NAME) == len(DISTINCT_TEXTS)  # the configured model keeps everything


def test_vectors_unused_for_longer_than_the_retention_are_pruned(chunked, tmp_path):
    store = chunked
    embedder = HashedEmbedder()
    _index(store, tmp_path, embedder)
    store.chunks.replace(source=SOURCE, url="http://d/vacuum.html", new_chunks=[], chunked_key="k2")
    report, _ = _index(store, tmp_path, embedder)
    # Their last chunk gone, the page's four texts start their retention; nothing is deleted yet.
    assert (report.vectors_released, report.vectors_pruned, report.vectors_deleted) == (4, 0, 4)
    with store.transaction() as connection:
        connection.execute(
            sa.text("UPDATE pipeline_vectors SET released_at = :moment WHERE released_at IS NOT NULL"),
            {"moment": utcnow() - RETENTION - timedelta(hours=1)},
        )
    report, _ = _index(store, tmp_path, embedder)
    assert report.vectors_pruned == 4 and store.embeddings.count(REMOTE_MODEL) == len(DISTINCT_TEXTS) - 4


def test_header_lines_are_embedded_only_with_the_local_model_at_hand(chunked, tmp_path, minilm, monkeypatch):
    store = chunked

    def no_local_model(*_):
        raise AssertionError("the local model was loaded while embedding remotely")

    with monkeypatch.context() as patched:
        patched.setattr("pipeline.embedding.minilm._load_tokenizer", no_local_model)
        patched.setattr("pipeline.embedding.minilm._model_path", no_local_model)
        report, _ = _index(store, tmp_path, HashedEmbedder())
    assert report.headers_embedded == 0 and store.embeddings.embedded_headers() == set()
    report, _ = _index(store, tmp_path, HashedEmbedder(), header_embedder=minilm)
    assert report.headers_embedded == 1 and store.embeddings.embedded_headers() == {"Guide"}


def test_a_wiped_collection_is_restored_from_the_stored_vectors_without_embedding(chunked, tmp_path):
    store = chunked
    _, vectors = _index(store, tmp_path, HashedEmbedder())
    vectors.client.delete_collection(vectors.name)
    again = Recording(HashedEmbedder())
    report, vectors = _index(store, tmp_path, again)
    assert again.embedded == [] and report.vectors_restored == len(store.chunks.ids()) == vectors.count()


def test_the_collection_of_code_before_models_had_their_own_is_dropped(chunked, tmp_path, minilm):
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    client.create_collection(DEFAULT_COLLECTION, metadata={"embedding_model": MODEL_NAME}, embedding_function=None)
    report, vectors = _index(chunked, tmp_path, minilm, minilm)
    assert report.collections_dropped == (DEFAULT_COLLECTION,)
    assert _chroma_collections(tmp_path) == {vectors.name}


CHROMA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


@pytest.mark.parametrize(
    "model",
    [
        MODEL_NAME,
        REMOTE_MODEL,
        "cohere-embed-multilingual@us.inference.heroku.com",
        "cohere-embed-multilingual@us.inference.heroku.com:443",
        "org/model..v2@[::1]:8080",
        "x" * 200,
        "é",
    ],
)
def test_every_model_gets_a_collection_name_chroma_accepts(model, tmp_path):
    name = collection_name(DEFAULT_COLLECTION, model)
    assert CHROMA_NAME.match(name) and ".." not in name and len(name) <= MAX_COLLECTION_NAME
    assert name.startswith(f"{DEFAULT_COLLECTION}-")
    vectors = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), model)
    assert vectors.name == name and vectors.collection.metadata["embedding_model"] == model


def test_collection_names_are_readable_where_they_can_be_and_never_shared():
    assert collection_name(DEFAULT_COLLECTION, MODEL_NAME) == "documentation-all-MiniLM-L6-v2"
    similar = ["model@host:1", "model@host-1", "model-host-1", "model@host:2"]
    assert len({collection_name(DEFAULT_COLLECTION, model) for model in similar}) == len(similar)
    assert collection_name("docs", "cohere-embed-multilingual@us.inference.heroku.com").startswith(
        "docs-cohere-embed-multilingual-us.inference.heroku.com-"
    )


def test_only_the_local_models_collection_embeds_text_itself(tmp_path, minilm):
    connection = ChromaConnection(data_dir=str(tmp_path))
    local = VectorIndex(connection, MODEL_NAME, minilm)
    remote = VectorIndex(connection, REMOTE_MODEL)
    local.collection.add(ids=["a"], documents=["Autovacuum runs in the background."])
    assert local.collection.query(query_texts=["autovacuum"], n_results=1)["ids"] == [["a"]]
    with pytest.raises(ValueError, match="embedding function"):
        remote.collection.query(query_texts=["autovacuum"], n_results=1)
    with pytest.raises(ValueError, match=REMOTE_MODEL):
        VectorIndex(connection, REMOTE_MODEL, minilm)


def test_an_embedder_is_not_given_another_models_collection(chunked, tmp_path):
    local = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), MODEL_NAME)
    with pytest.raises(ValueError, match="not the embedder's"):
        index_chunks(chunked, local, HashedEmbedder(), SOURCE)
    assert chunked.embeddings.models() == {} and local.count() == 0
