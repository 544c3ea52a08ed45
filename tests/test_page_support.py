"""Page support as retrieval applies it (``pipeline.page_support``): by hand, against the study's signal, on
real Chroma with MiniLM, and as a run knob of retrieved_candidates."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from pipeline.embedding import MiniLMEmbedder
from pipeline.evaluation.page_signal import PageSupport, page_fused_scores
from pipeline.ingest.vectors import index_chunks
from pipeline.page_support import page_supported
from pipeline.retrieve import Fusion, dense_candidates, page_sizes_for, retrieve_candidates
from pipeline.store.records import Query
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.support import materialization_metadata, page_chunks
from tests.tiny_site import tiny_site


def test_a_page_with_several_good_chunks_outranks_a_stray_better_chunk():
    # misc: one chunk at 0.9 among chunks matching nothing; limits: three chunks at 0.8, 0.7 and 0.6.
    pool = [("m1", 0.9, "misc"), ("l1", 0.8, "limits"), ("l2", 0.7, "limits"), ("l3", 0.6, "limits")]
    pool += [("m2", 0.1, "misc"), ("m3", 0.1, "misc")]
    sizes = {"misc": 4, "limits": 3}
    ranked = page_supported(pool, sizes, weight=1.0)
    # Support: limits (0.8 + 0.7 + 0.6) / 3 = 0.7, misc (0.9 + 0.1 + 0.1) / 3 = 0.3667.
    assert [chunk for chunk, _ in ranked] == ["l1", "l2", "l3", "m1", "m2", "m3"]
    assert [score for _, score in ranked][:4] == pytest.approx([1.5, 1.4, 1.3, 0.9 + 1.1 / 3])
    assert [chunk for chunk, _ in page_supported(pool, sizes, weight=0.0)] == ["m1", "l1", "l2", "l3", "m2", "m3"]


def test_a_one_chunk_page_is_judged_by_its_chunk_and_a_slot_outside_the_pool_counts_its_lowest_score():
    pool = [("a1", 0.9, "a"), ("b1", 0.8, "b"), ("c1", 0.5, "c")]
    ranked = dict(page_supported(pool, {"a": 1, "b": 5, "c": 2}, weight=1.0))
    assert ranked["a1"] == pytest.approx(0.9 + 0.9)  # one slot: its own chunk
    assert ranked["b1"] == pytest.approx(0.8 + (0.8 + 0.5 + 0.5) / 3)  # two of three slots outside the pool
    assert ranked["c1"] == pytest.approx(0.5 + 0.5)
    # A page the store no longer lists counts the chunks the pool holds of it.
    assert dict(page_supported(pool, {}, weight=1.0))["b1"] == pytest.approx(0.8 + 0.8)
    assert page_supported([], {"a": 1}, weight=1.0) == []


def test_retrieval_applies_exactly_the_page_support_the_study_measured():
    generator = np.random.default_rng(18)
    scores = generator.uniform(0, 1, size=60)
    pages = generator.integers(0, 12, size=60)
    pool = 20
    studied = page_fused_scores(scores[None, :], np.zeros((1, 1)), PageSupport(pages, best=3, pool=pool), 1.0)[0]
    studied_order = np.argsort(-studied, kind="stable")[:pool]
    nearest = np.argsort(-scores, kind="stable")[:pool]
    sizes = {str(page): int((pages == page).sum()) for page in set(pages.tolist())}
    shipped = page_supported([(str(i), float(scores[i]), str(pages[i])) for i in nearest], sizes, weight=1.0)
    assert [int(chunk) for chunk, _ in shipped] == studied_order.tolist()
    np.testing.assert_allclose([score for _, score in shipped], studied[studied_order])


PAGES = {
    "http://docs/limits.html": [
        "max_connections sets how many client connections the server accepts at the same time.",
        "When max_connections is reached, new clients are refused until a connection closes.",
        "Raise max_connections together with shared memory, since each connection reserves some.",
    ],
    "http://docs/misc.html": [
        "How many clients can connect to the server at the same time?",
        "The locale of a database decides how strings sort.",
        "Tablespaces place data files on another disk.",
        "Checksums detect corrupted data pages on read.",
    ],
}
QUESTION = Query("q1", "how many clients can connect to the server at once")


@pytest.fixture
def indexed(tmp_path):
    store = StateStore(sqlite_url(tmp_path))
    for url, texts in PAGES.items():
        store.chunks.replace(source="docs", url=url, new_chunks=page_chunks(url, texts), chunked_key="k")
    embedder = MiniLMEmbedder()
    vectors = VectorIndex(ChromaConnection(data_dir=str(tmp_path)), embedder.model, embedder)
    index_chunks(store, vectors, embedder, "docs")
    yield store, vectors, embedder
    store.dispose()


def test_on_chroma_the_page_about_the_question_overtakes_the_stray_paragraph(indexed):
    store, vectors, embedder = indexed
    plain = {hit.chunk_id: hit.score for hit in dense_candidates([QUESTION], vectors, embedder, 7)["q1"]}
    assert next(iter(plain)).startswith("misc-")  # the question's near paraphrase, on a page about other things
    assert store.chunks.page_sizes() == {"http://docs/limits.html": 3, "http://docs/misc.html": 4}
    sizes = page_sizes_for(Fusion(page_support_weight=1.0), store)
    supported = dense_candidates([QUESTION], vectors, embedder, 7, page_support_weight=1.0, page_sizes=sizes)["q1"]
    assert supported[0].chunk_id.startswith("limits-") and supported[1].chunk_id.startswith("misc-")
    # By hand from the plain cosines: each page's three best, every chunk of both pages being in the pool.
    best_three = {
        page: sorted((score for chunk, score in plain.items() if chunk.startswith(page)), reverse=True)[:3]
        for page in ("limits-", "misc-")
    }
    expected = {chunk: score + sum(best_three[chunk.split("-")[0] + "-"]) / 3 for chunk, score in plain.items()}
    assert {hit.chunk_id: hit.score for hit in supported} == pytest.approx(expected)
    assert [hit.chunk_id for hit in supported] == sorted(expected, key=lambda chunk: -expected[chunk])
    assert page_sizes_for(Fusion(), store) is None
    with pytest.raises(ValueError, match="page_support_weight must be non-negative"):
        Fusion(page_support_weight=-0.5)
    with pytest.raises(ValueError, match="page_sizes"):
        retrieve_candidates([QUESTION], vectors, embedder, 7, fusion=Fusion(page_support_weight=1.0))


def test_page_support_is_a_run_knob_of_retrieved_candidates(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance, tiny_site(tmp_path, instance) as site:
        site.run.ingest("alpha")
        site.run.ingest("beta")
        knob = {"ops": {"retrieved_candidates": {"config": {"page_support_weight": 1.0}}}}
        retrieved = materialization_metadata(site.run.downstream(run_config=knob), "retrieved_candidates")
        assert retrieved["page_support_weight"] == 1.0
        assert retrieved["queries_without_candidates"] == 0 and retrieved["candidates_from_both"] > 0
