"""Lexical index (incremental consistency, rebuild when wiped), RRF fusion, hybrid retrieval, the index check."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.ingest import indexes_match_stored_chunks, lexical_index
from pipeline.defs.resources import ChromaResource, PipelineFilesResource, StateStoreResource
from pipeline.embedding import MiniLMEmbedder
from pipeline.ingest.consistency import check_index_consistency
from pipeline.ingest.vectors import index_chunks
from pipeline.retrieve import Fusion, fuse, lexical_candidates, reciprocal_rank_fusion, retrieve_candidates
from pipeline.store.lexical import LexicalIndex, sync_lexical
from pipeline.store.records import Query
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.support import page_chunks

PAGES = {
    "http://docs/pool.html": [
        "Connection pooling reuses open database connections instead of opening a new one per request.",
        "Set max_connections to bound how many clients the server accepts at once.",
    ],
    "http://docs/vacuum.html": [
        "VACUUM reclaims storage occupied by dead tuples left behind by updates and deletes.",
        "Autovacuum runs VACUUM and ANALYZE automatically in the background.",
    ],
    "http://docs/errors.html": [
        "SQLSTATE 40P01 deadlock_detected: two transactions wait on each other's locks.",
    ],
}


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture
def store(tmp_path):
    state = StateStore(sqlite_url(tmp_path))
    for url, texts in PAGES.items():
        state.chunks.replace(source="docs", url=url, new_chunks=page_chunks(url, texts), chunked_key="k")
    yield state
    state.dispose()


@pytest.fixture
def indexed(store, tmp_path, embedder):
    """The store's chunks embedded into Chroma and indexed for BM25, as an ingest run leaves them."""
    vectors = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), embedder.model, embedder)
    index_chunks(store, vectors, embedder, "docs")
    lexical = LexicalIndex(tmp_path)
    sync_lexical(store, lexical)
    return store, vectors, lexical


def test_search_ranks_by_bm25_and_leaves_out_chunks_without_query_terms(tmp_path):
    lexical = LexicalIndex(tmp_path)
    lexical.rebuild(
        [
            ("a", "s", "deadlock detected between two transactions"),
            ("b", "s", "a deadlock, another deadlock and yet another deadlock"),
            ("c", "s", "autovacuum settings"),
        ]
    )
    hits = lexical.search("deadlocks", 10)
    assert [hit.chunk_id for hit in hits] == ["b", "a"]
    assert hits[0].score > hits[1].score > 0
    assert lexical.search("unrelated words only", 10) == []
    with pytest.raises(ValueError, match="k must be at least 1"):
        lexical.search("deadlock", 0)


def test_sync_follows_additions_and_deletions_incrementally(store, tmp_path):
    lexical = LexicalIndex(tmp_path)
    first = sync_lexical(store, lexical)
    assert (first.added, first.removed, first.rebuilt) == (5, 0, True)
    assert lexical.ids() == store.chunks.ids()

    unchanged = sync_lexical(store, lexical)
    assert (unchanged.added, unchanged.removed, unchanged.rebuilt) == (0, 0, False)

    # An edited page: one chunk replaced, one kept; a deleted page: its chunks go.
    url = "http://docs/vacuum.html"
    edited = page_chunks(url, [PAGES[url][0], "VACUUM FULL rewrites the whole table and takes an exclusive lock."])
    store.chunks.replace(source="docs", url=url, new_chunks=edited, chunked_key="k2")
    store.chunks.replace(source="docs", url="http://docs/errors.html", new_chunks=[], chunked_key="k2")
    refreshed = sync_lexical(store, lexical)
    assert (refreshed.added, refreshed.removed, refreshed.total) == (1, 2, 4)
    assert lexical.ids() == store.chunks.ids()
    assert [hit.chunk_id for hit in lexical.search("exclusive lock rewrite", 1)] == [edited[1].chunk_id]
    assert lexical.search("40P01", 5) == []
    # A second process sees the rebuilt index without being told.
    assert LexicalIndex(tmp_path).ids() == store.chunks.ids()


def test_a_wiped_index_is_rebuilt_from_the_state_store(store, tmp_path):
    lexical = LexicalIndex(tmp_path)
    sync_lexical(store, lexical)
    shutil.rmtree(tmp_path / "lexical")
    assert lexical.ids() == set()
    report = sync_lexical(store, lexical)
    assert report.rebuilt and report.added == 5
    assert lexical.ids() == store.chunks.ids()
    assert lexical.ids("docs") == store.chunks.ids("docs") and lexical.ids("other") == set()


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "d", "a"]], [1.0, 0.5], rrf_k=10))
    assert fused == pytest.approx({"a": 1 / 11 + 0.5 / 13, "b": 1 / 12, "c": 1 / 13 + 0.5 / 11, "d": 0.5 / 12})
    # a: 0.1293, c: 0.1224, b: 0.0833, d: 0.0417
    candidates = fuse(["a", "b", "c"], ["c", "d", "a"], k=3, fusion=Fusion(rrf_k=10, lexical_weight=0.5))
    assert [(c.chunk_id, c.dense_rank, c.lexical_rank) for c in candidates] == [
        ("a", 1, 3),
        ("c", 3, 1),
        ("b", 2, None),
    ]
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        reciprocal_rank_fusion([["a"], ["b"]], [1.0], rrf_k=60)


def test_hybrid_candidates_are_the_deduplicated_union_of_both_rankings(indexed, embedder):
    store, vectors, lexical = indexed
    queries = [Query("q1", "What does SQLSTATE 40P01 mean?"), Query("q2", "reuse database connections")]
    hybrid = retrieve_candidates(queries, vectors, embedder, 4, lexical=lexical, fusion=Fusion(depth=3))
    dense = retrieve_candidates(queries, vectors, embedder, 3)
    bm25 = lexical_candidates(queries, lexical, 3)
    for query in queries:
        ids = [c.chunk_id for c in hybrid[query.query_id]]
        union = {c.chunk_id for c in dense[query.query_id]} | {c.chunk_id for c in bm25[query.query_id]}
        # Found by both retrievers, a chunk is listed once.
        assert len(union) < len(dense[query.query_id]) + len(bm25[query.query_id])
        assert len(ids) == len(set(ids)) == min(4, len(union))
        assert set(ids) <= union
        scores = [c.score for c in hybrid[query.query_id]]
        assert scores == sorted(scores, reverse=True)
    error_chunk = page_chunks("http://docs/errors.html", PAGES["http://docs/errors.html"])[0].chunk_id
    assert hybrid["q1"][0].chunk_id == error_chunk
    assert hybrid["q1"][0].dense_rank is not None and hybrid["q1"][0].lexical_rank == 1


def test_consistency_check_names_what_differs(indexed):
    store, vectors, lexical = indexed
    assert check_index_consistency(store, vectors, lexical).consistent
    doomed = sorted(store.chunks.ids())[0]
    vectors.delete([doomed])
    lexical.rebuild([("stray", "docs", "a chunk the store never had")])
    broken = check_index_consistency(store, vectors, lexical)
    assert not broken.consistent
    assert broken.missing_from_chroma == {doomed} and not broken.extra_in_chroma
    assert broken.extra_in_lexical == {"stray"} and len(broken.missing_from_lexical) == 5
    assert broken.metadata()["missing_from_lexical"] == 5


def _materialise_lexical_index(tmp_path, source: str = "docs") -> dg.ExecuteInProcessResult:
    resources = {
        "files": PipelineFilesResource(
            data_dir=str(tmp_path),
            sources_path="unused",
            queries_path="unused",
            labelled_queries_path="unused",
            unanswerable_queries_path="unused",
        ),
        "state_store": StateStoreResource(data_dir=str(tmp_path)),
        "chroma": ChromaResource(data_dir=str(tmp_path)),
        "embedder": EmbedderResource(),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("sources", ["docs", "other"])
        return dg.materialize(
            [lexical_index, indexes_match_stored_chunks],
            partition_key=source,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )


def test_asset_check_passes_on_consistent_indexes_and_fails_when_chroma_lags(indexed, tmp_path):
    store, vectors, lexical = indexed
    good = _materialise_lexical_index(tmp_path)
    [evaluation] = good.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata

    # A vector lost from Chroma (e.g. a failed upsert): the lexical index alone cannot mend it.
    vectors.delete([sorted(store.chunks.ids())[0]])
    bad = _materialise_lexical_index(tmp_path)
    [evaluation] = bad.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["missing_from_chroma"].value == 1
    assert evaluation.metadata["missing_from_lexical"].value == 0


def test_asset_check_of_one_source_is_not_failed_by_another_sources_unfinished_index(indexed, tmp_path):
    store, vectors, _ = indexed
    # docs' worker was killed between saving embeddings and upserting them: docs' own run finishes it.
    vectors.delete([sorted(store.chunks.ids("docs"))[0]])
    [other] = _materialise_lexical_index(tmp_path, source="other").get_asset_check_evaluations()
    assert other.passed, other.metadata
    [docs] = _materialise_lexical_index(tmp_path).get_asset_check_evaluations()
    assert not docs.passed and docs.metadata["missing_from_chroma"].value == 1
