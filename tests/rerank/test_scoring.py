"""LocalRelevanceScorer: relevant beats irrelevant, bounded, deterministic; BM25 part in isolation."""

from __future__ import annotations

import pytest

from pipeline.embedding import MiniLMEmbedder
from pipeline.rerank.scoring import DENSE_WEIGHT, LocalRelevanceScorer, lexical_scores, tokenize

QUERY = "How do I optimize database connection pooling?"
RELEVANT = (
    "Connection pooling reduces database overhead by reusing existing connections instead of opening new ones"
)
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
    fresh = LocalRelevanceScorer(MiniLMEmbedder(), cache_size=0)

    assert scorer.score(QUERY, DOCUMENTS) == scorer.score(QUERY, DOCUMENTS)
    assert fresh.score(QUERY, DOCUMENTS) == pytest.approx(scorer.score(QUERY, DOCUMENTS), abs=1e-6)


def test_a_document_scores_about_the_same_in_any_candidate_set(scorer):
    alone = scorer.score(QUERY, [RELEVANT])[0]
    among_others = scorer.score(QUERY, DOCUMENTS)[2]

    # Only the lexical part depends on the set (through IDF); the dense part does not.
    assert abs(alone - among_others) < 1 - DENSE_WEIGHT


def test_bm25_prefers_more_query_terms_and_stays_below_one():
    documents = [
        "database connection pooling",
        "database tuning",
        "gardening tips",
        "database database database",
    ]
    full, partial, none, repeated = lexical_scores("database connection pooling", documents)

    assert full > partial > none == 0.0
    assert full > repeated
    assert 0.0 < full < 1.0


def test_bm25_normalises_for_document_length():
    short, long = lexical_scores("pooling", ["pooling explained", "pooling " + "filler words " * 40])
    assert short > long


def test_bm25_without_query_words_scores_zero():
    assert list(lexical_scores("?!", ["anything at all"])) == [0.0]
    assert tokenize("Connection-Pooling, v2!") == ["connection", "pooling", "v2"]


def test_seeded_vectors_replace_embedding(scorer):
    seeded = LocalRelevanceScorer(scorer.embedder)
    irrelevant = "Knitting a scarf takes patience and a good pair of needles."
    query_vector = scorer.embedder.embed([QUERY])
    seeded.seed_vectors([irrelevant], query_vector)

    # The seeded vector equals the query's, so the dense part is a perfect match.
    assert seeded.dense_scores(QUERY, [irrelevant])[0] == pytest.approx(1.0, abs=1e-5)
    assert scorer.dense_scores(QUERY, [irrelevant])[0] < 0.2
    with pytest.raises(ValueError, match="1 documents but 2 vectors"):
        seeded.seed_vectors(["one"], query_vector.repeat(2, axis=0))
