"""The streamed BM25 build against bm25s's own: the same weights, the same searches, whatever the order."""

from __future__ import annotations

import random

import bm25s
import numpy as np
import pytest

from pipeline.store.bm25 import PostingsBuilder, ScoreMatrix, analyze
from pipeline.store.lexical import BM25_B, BM25_K1, LexicalIndex

WORDS = [f"term{n}" for n in range(300)]


def _corpus(seed: int, documents: int) -> list[list[str]]:
    """Token lists with skewed term frequencies, repeats within a document, and a few empty documents."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    return [rng.choices(WORDS, weights=weights, k=rng.choice([0, 1, 5, 40, 120])) for _ in range(documents)]


def _dense(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, vocabulary: dict[str, int], rows: int):
    """term → that term's column of weights over all documents."""
    columns = {}
    for term, column in vocabulary.items():
        if column < len(indptr) - 1:
            dense = np.zeros(rows, dtype=np.float64)
            dense[indices[indptr[column] : indptr[column + 1]]] = data[indptr[column] : indptr[column + 1]]
            columns[term] = dense
    return columns


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_weights_equal_bm25s_built_from_the_whole_corpus_with_documents_added_in_any_order(seed: int) -> None:
    corpus = _corpus(seed, 400)
    reference = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    reference.index(corpus, show_progress=False)

    # Documents arrive shuffled; each is told the row it belongs at.
    arrival = list(range(len(corpus)))
    random.Random(seed).shuffle(arrival)
    postings = PostingsBuilder()
    for position in arrival:
        postings.add(corpus[position])
    matrix = postings.build(np.array(arrival), k1=BM25_K1, b=BM25_B)

    assert matrix.num_docs == reference.scores["num_docs"] == len(corpus)
    assert matrix.data.dtype == np.float32 and matrix.indices.dtype == np.int32
    assert len(matrix.data) == len(reference.scores["data"])
    for column in range(len(matrix.indptr) - 1):
        rows = matrix.indices[matrix.indptr[column] : matrix.indptr[column + 1]]
        assert np.all(np.diff(rows) > 0), "rows ascend within each column"
    ours = _dense(matrix.data, matrix.indices, matrix.indptr, matrix.vocabulary, len(corpus))
    theirs = _dense(
        reference.scores["data"],
        reference.scores["indices"],
        reference.scores["indptr"],
        reference.vocab_dict,
        len(corpus),
    )
    assert ours.keys() == theirs.keys() - {""}
    for term, column in ours.items():
        np.testing.assert_allclose(column, theirs[term], rtol=1e-6, atol=0, err_msg=term)


def test_a_saved_index_searches_as_one_bm25s_built_itself(tmp_path) -> None:
    rng = random.Random(7)
    texts = {f"chunk-{n:04}": " ".join(rng.choices(WORDS, k=rng.randint(3, 80))) for n in range(300)}
    rows = list(texts.items())
    rng.shuffle(rows)
    index = LexicalIndex(tmp_path)
    with index.locked():
        index.rebuild((chunk_id, "docs", text) for chunk_id, text in rows)

    ordered = sorted(texts)
    reference = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    reference.index([analyze(texts[chunk_id]) for chunk_id in ordered], show_progress=False)
    for query in ["term1", "term0 term17 term250", "term299 term3 term3", "nothing known"]:
        hits = index.search(query, 20)
        token_ids = reference.get_tokens_ids(analyze(query))
        scores = reference.get_scores(token_ids) if token_ids else np.zeros(len(ordered))
        expected = sorted(
            ((float(score), chunk_id) for chunk_id, score in zip(ordered, scores, strict=True) if score > 0),
            key=lambda pair: (-pair[0], pair[1]),
        )[:20]
        assert [hit.chunk_id for hit in hits] == [chunk_id for _, chunk_id in expected], query
        np.testing.assert_allclose([hit.score for hit in hits], [score for score, _ in expected], rtol=1e-6)
    assert index.ids() == set(texts)


def test_documents_without_terms_get_rows_and_no_weights() -> None:
    postings = PostingsBuilder()
    for tokens in ([], ["alpha", "beta", "alpha"], []):
        postings.add(tokens)
    matrix: ScoreMatrix = postings.build(np.arange(3), k1=BM25_K1, b=BM25_B)
    assert matrix.num_docs == 3
    assert set(matrix.indices.tolist()) == {1}
    assert matrix.vocabulary == {"alpha": 0, "beta": 1}
    # alpha occurs twice, beta once, in the one document that has terms: alpha weighs more.
    assert matrix.data[0] > matrix.data[1] > 0


def test_analysis_lowercases_stems_and_drops_stopwords():
    assert analyze("The Connections of max_connections, pg_hba.conf") == ["connect", "max_connect", "pg_hba", "conf"]
