"""LocalRelevanceScorer: relevant beats irrelevant, bounded, deterministic; each feature alone; stored vectors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.chunking import header_line
from pipeline.embedding import MODEL_NAME
from pipeline.local import StoredEmbeddings
from pipeline.local.scoring import (
    FEATURES,
    WEIGHTS,
    LocalRelevanceScorer,
    header_of,
    lexical_scores,
    page_mass,
    page_of,
    page_support,
    text_key,
)
from pipeline.stand_ins import local_scorer
from pipeline.store.chunks import text_hash
from pipeline.store.lexical import analyze
from pipeline.store.records import StoredChunk
from pipeline.store.state import StateStore, sqlite_url

QUERY = "How do I optimize database connection pooling?"
RELEVANT = "Connection pooling reduces database overhead by reusing existing connections instead of opening new ones"
DOCUMENTS = [
    "Bananas are a yellow fruit rich in potassium.",
    "The museum opens at nine and closes at five on weekdays.",
    RELEVANT,
    "You can monitor application performance using built-in metrics.",
    "Knitting a scarf takes patience and a good pair of needles.",
]


def test_the_relevant_document_scores_highest(scorer):
    scores = scorer.score(QUERY, DOCUMENTS)

    assert max(range(len(scores)), key=scores.__getitem__) == DOCUMENTS.index(RELEVANT)
    assert scores[2] > 0.4
    assert max(scores[0], scores[1], scores[4]) < 0.15


def test_paraphrase_without_shared_words_still_beats_unrelated_text(scorer):
    query = "automobile repair"
    documents = ["how to fix your car engine", "a recipe for chocolate cake"]
    fixed, cake = scorer.score(query, documents)

    assert fixed > cake


def test_scores_are_bounded_and_one_per_document(scorer):
    documents = DOCUMENTS + ["", "pooling " * 300, QUERY]
    scores = scorer.score(QUERY, documents)

    assert len(scores) == len(documents)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scorer.score(QUERY, []) == []


def test_scores_are_deterministic_and_independent_of_the_cache(scorer):
    fresh = local_scorer(cache_size=0)

    assert scorer.score(QUERY, DOCUMENTS) == scorer.score(QUERY, DOCUMENTS)
    assert fresh.score(QUERY, DOCUMENTS) == pytest.approx(scorer.score(QUERY, DOCUMENTS), abs=1e-6)


def test_a_document_scores_about_the_same_in_any_candidate_set(scorer):
    alone = scorer.score(QUERY, [RELEVANT])[0]
    among_others = scorer.score(QUERY, DOCUMENTS)[2]

    # Only the lexical part depends on the set (through IDF); without page headers, nothing else does.
    assert abs(alone - among_others) < WEIGHTS["lexical"] / sum(WEIGHTS.values())


def test_bm25_prefers_more_query_terms_and_stays_below_one():
    documents = [
        "database connection pooling",
        "database tuning",
        "gardening tips",
        "database database database",
    ]
    full, partial, none, repeated = lexical_scores("database connection pooling", documents, analyze)

    assert full > partial > none == 0.0
    assert full > repeated
    assert 0.0 < full < 1.0


def test_bm25_normalises_for_document_length():
    short, long = lexical_scores("pooling", ["pooling explained", "pooling " + "filler words " * 40], analyze)
    assert short > long


def test_bm25_without_query_words_scores_zero():
    assert list(lexical_scores("?!", ["anything at all"], analyze)) == [0.0]


def test_bm25_matches_word_forms_through_stemming():
    stemmed, unrelated = lexical_scores("too many connections", ["the connection limit", "disk space"], analyze)
    assert stemmed > unrelated == 0.0


def _feature(scorer, query, documents, name):
    return scorer.features(query, documents)[:, FEATURES.index(name)]


def test_coverage_is_the_share_of_query_terms_present(scorer):
    coverage = _feature(
        scorer, "vacuum freeze wraparound", ["vacuum freeze prevents wraparound", "vacuum only"], "coverage"
    )
    assert list(coverage) == pytest.approx([1.0, 1 / 3])


def test_page_support_counts_passages_of_the_same_page():
    documents = [
        "Routine Vacuuming > Autovacuum\nThe autovacuum daemon...",
        "Routine Vacuuming > Freezing\nTo prevent wraparound...",
        "Routine Vacuuming\nPostgreSQL databases require...",
        "Server Configuration > Memory\nwork_mem sets...",
        "no header line: a plain document",
    ]
    assert page_of(documents[0]) == page_of(documents[1]) == "Routine Vacuuming"
    assert page_of(documents[4]) == documents[4]
    support = page_support(documents)
    assert support[0] == support[1] == support[2] == pytest.approx(np.log(3) / np.log(10))
    assert support[3] == support[4] == 0.0
    assert page_support(["Big Page\nchunk"] * 20)[0] == 1.0


def test_a_passage_backed_by_its_page_outranks_an_equal_lone_passage(scorer):
    query = "how do I size shared buffers"
    lone = "Tuning Notes > Memory\nshared_buffers sets the memory for shared buffers."
    backed = "Server Configuration > Memory\nshared_buffers sets the memory for shared buffers."
    siblings = [f"Server Configuration > Memory\nOther memory setting number {n}." for n in range(3)]
    scores = scorer.score(query, [lone, backed, *siblings])
    assert scores[1] > scores[0]
    only_dense = local_scorer(scorer.embedder, weights={"dense": 1.0})
    assert only_dense.score(query, [lone, backed])[1] == pytest.approx(
        only_dense.score(query, [lone, backed])[0], abs=0.05
    )


def test_heading_dense_scores_the_header_line_alone(scorer):
    query = "how do I prevent transaction ID wraparound"
    documents = [
        "Routine Vacuuming > Preventing Transaction ID Wraparound Failures\nThe freeze age of each table is tracked.",
        "Server Configuration > Logging\nThe freeze age of each table is tracked.",
        "no header line: transaction ID wraparound",
    ]
    assert header_of(documents[0], header_line) == "Routine Vacuuming > Preventing Transaction ID Wraparound Failures"
    heading = _feature(scorer, query, documents, "heading_dense")
    dense = _feature(scorer, query, documents, "dense")
    expected = float(
        np.clip(
            scorer.embedder.embed([header_of(documents[0], header_line)])[0] @ scorer.embedder.embed([query])[0], 0, 1
        )
    )
    assert heading[0] == pytest.approx(expected, abs=1e-5)
    assert heading[0] > heading[1] + 0.3  # same body, the header decides
    assert heading[2] == pytest.approx(dense[2])  # no header: the document itself


def test_the_scorer_reads_documents_with_the_analyzer_and_header_lines_it_is_given(scorer):
    # The CLI passes the pipeline's own; the scorer knows no other, so a different pair changes what it reads.
    def with_synonym(text):
        return ["car" if word == "automobile" else word for word in text.lower().split()]

    def before_a_bar(document):
        header, bar, _ = document.partition(" | ")
        return header if bar else None

    reader = LocalRelevanceScorer(scorer.embedder, analyze=with_synonym, header_line=before_a_bar)
    query, documents = "automobile", ["car repair | knitting a scarf", "chocolate cake"]
    assert list(reader.features(query, documents)[:, FEATURES.index("coverage")]) == [1.0, 0.0]
    assert list(_feature(scorer, query, documents, "coverage")) == [0.0, 0.0]
    heading = reader.features(query, documents)[0, FEATURES.index("heading_dense")]
    assert heading == pytest.approx(float(reader.dense_scores(query, ["car repair"])[0]), abs=1e-5)
    assert _feature(scorer, query, documents, "heading_dense")[0] == pytest.approx(
        scorer.dense_scores(query, documents)[0]
    )


def test_page_mass_sums_each_pages_excess_over_the_median():
    documents = ["A\none", "A\ntwo", "B\nthree", "C\nfour", "D\nfive"]
    dense = np.array([0.6, 0.5, 0.7, 0.4, 0.3])  # median 0.5
    # Excess: A 0.1 + 0.0, B 0.2, C and D 0; divided by the largest page's (B).
    assert list(page_mass(documents, dense)) == pytest.approx([0.5, 0.5, 1.0, 0.0, 0.0])
    assert list(page_mass(documents[:2], np.array([0.5, 0.5]))) == [0.0, 0.0]


def test_weights_are_validated(scorer):
    for weights in ({"dense": 1.0, "title": 1.0}, {"dense": -1.0}, {"dense": 0.0}):
        with pytest.raises(ValueError, match="weights must be non-negative"):
            local_scorer(scorer.embedder, weights=weights)


def _stored_chunk(text: str) -> StoredChunk:
    return StoredChunk(text[:8], "docs", "http://d/a", "A", ("A",), text, text, 5, 0)


def test_vectors_stored_at_ingest_replace_embedding(scorer, tmp_path):
    store = StateStore(sqlite_url(tmp_path))
    irrelevant = "Knitting a scarf takes patience and a good pair of needles."
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_stored_chunk(irrelevant)], chunked_key="k")
    # Pretend ingest embedded this text as the query's vector: the scorer must take the stored one.
    store.embeddings.save(MODEL_NAME, {text_hash(irrelevant): scorer.embedder.embed([QUERY])[0]})
    uses_store = local_scorer(
        scorer.embedder, cache_size=0, known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts)
    )
    assert uses_store.dense_scores(QUERY, [irrelevant])[0] == pytest.approx(1.0, abs=1e-5)
    assert scorer.dense_scores(QUERY, [irrelevant])[0] < 0.2
    # Texts the store does not know are embedded.
    assert uses_store.dense_scores(QUERY, [RELEVANT])[0] == pytest.approx(scorer.dense_scores(QUERY, [RELEVANT])[0])
    store.dispose()


def test_stored_embeddings_reload_on_a_miss_at_most_every_interval(tmp_path):
    store = StateStore(sqlite_url(tmp_path))
    now = [0.0]
    known = StoredEmbeddings(store.embeddings.iter_embedded_texts, reload_seconds=60, clock=lambda: now[0])
    text = "VACUUM reclaims storage."
    key = {text_key(text): text}
    store.chunks.replace(source="docs", url="http://d/a", new_chunks=[_stored_chunk(text)], chunked_key="k")
    assert known.lookup(key) == {}  # the first lookup loads; the chunk has no embedding yet
    store.embeddings.save(MODEL_NAME, {text_hash(text): np.ones(384, dtype=np.float32)})
    now[0] = 30.0
    assert known.lookup(key) == {}  # too soon to reload
    now[0] = 61.0
    assert list(known.lookup(key)) == list(key)
    assert len(known) == 1
    store.dispose()


def test_seeded_vectors_replace_embedding(scorer):
    seeded = local_scorer(scorer.embedder)
    irrelevant = "Knitting a scarf takes patience and a good pair of needles."
    query_vector = scorer.embedder.embed([QUERY])
    seeded.seed_vectors([irrelevant], query_vector)

    # The seeded vector equals the query's, so the dense part is a perfect match.
    assert seeded.dense_scores(QUERY, [irrelevant])[0] == pytest.approx(1.0, abs=1e-5)
    assert scorer.dense_scores(QUERY, [irrelevant])[0] < 0.2
    with pytest.raises(ValueError, match="1 documents but 2 vectors"):
        seeded.seed_vectors(["one"], query_vector.repeat(2, axis=0))
