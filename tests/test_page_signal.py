import numpy as np
import pytest

from pipeline import tokens
from pipeline.evaluation.chunk_rankings import retrieval_rankings
from pipeline.evaluation.page_signal import (
    PageSupport,
    lead_text,
    mean_page_vectors,
    page_fused_scores,
    page_vectors_by_url,
)
from pipeline.extract import Document, Section

A, B = "https://docs.example.com/a.html", "https://docs.example.com/b.html"


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# Page A's two chunks each match the query fairly well; page B has one stray chunk that matches it
# best of all, among chunks about something else entirely.
URLS = [B, A, B, A, B]
VECTORS = np.stack([unit(0.9, 0, 0.436), unit(0.8, 0.6, 0), unit(0, 0, 1), unit(0.8, -0.6, 0), unit(0, 1, 0)])
QUERY = np.stack([unit(1, 0, 0)])


def test_page_vectors_are_the_unit_mean_of_their_chunk_vectors():
    pages = mean_page_vectors(URLS, VECTORS)
    assert pages.urls == (B, A)
    assert pages.chunk_pages.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(np.linalg.norm(pages.vectors, axis=1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(pages.vectors[1], [1, 0, 0], atol=1e-6)
    expected_b = VECTORS[[0, 2, 4]].mean(axis=0)
    np.testing.assert_allclose(pages.vectors[0], expected_b / np.linalg.norm(expected_b), rtol=1e-6)


def test_a_page_about_the_question_outranks_a_stray_matching_chunk_of_another_page():
    chunk_scores = QUERY @ VECTORS.T
    assert int(np.argmax(chunk_scores[0])) == 0  # plain dense: the stray chunk of page B
    fused = page_fused_scores(chunk_scores, QUERY, mean_page_vectors(URLS, VECTORS), 0.5)
    assert np.argsort(-fused[0])[:2].tolist() == [1, 3]  # both chunks of page A first


def test_weight_zero_is_plain_dense_and_its_hybrid_is_plain_hybrid():
    pages = mean_page_vectors(URLS, VECTORS)
    chunk_scores = QUERY @ VECTORS.T
    np.testing.assert_array_equal(page_fused_scores(chunk_scores, QUERY, pages, 0.0), chunk_scores)
    ranked = retrieval_rankings(
        {"q1": "question"}, QUERY, VECTORS, lambda _, depth: ["4", "2"][:depth], {"mean": pages}, (0.0, 1.0)
    )
    assert ranked["dense+mean@0"] == ranked["dense"] == {"q1": ["0", "1", "3", "2", "4"]}
    assert ranked["hybrid+mean@0"] == ranked["hybrid"]
    assert ranked["dense+mean@1"]["q1"][:2] == ["1", "3"]
    assert ranked["bm25"] == {"q1": ["4", "2"]}


def test_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        page_fused_scores(QUERY @ VECTORS.T, QUERY, mean_page_vectors(URLS, VECTORS), -0.5)


def test_a_page_without_a_given_vector_gets_no_page_signal():
    pages = page_vectors_by_url(URLS, {A: unit(1, 0, 0)}, 3)
    assert pages.urls == (B, A)
    np.testing.assert_array_equal(pages.vectors, [[0, 0, 0], [1, 0, 0]])
    chunk_scores = QUERY @ VECTORS.T
    fused = page_fused_scores(chunk_scores, QUERY, pages, 1.0)
    np.testing.assert_allclose(fused - chunk_scores, [[0, 1, 0, 1, 0]], atol=1e-6)


def test_page_support_is_the_mean_of_the_pages_best_chunk_scores():
    # Scores: B 0.9, A 0.8, B 0, A 0.8, B 0. Best two per page: A (0.8 + 0.8) / 2, B (0.9 + 0) / 2.
    chunk_scores = QUERY @ VECTORS.T
    support = PageSupport(np.array([0, 1, 0, 1, 0]), best=2, pool=5).scores(QUERY, chunk_scores)
    np.testing.assert_allclose(support, [[0.45, 0.8, 0.45, 0.8, 0.45]], atol=1e-3)
    fused = page_fused_scores(chunk_scores, QUERY, PageSupport(np.array([0, 1, 0, 1, 0]), best=2, pool=5), 1.0)
    assert np.argsort(-fused[0], kind="stable")[:2].tolist() == [1, 3]  # page A's chunks beat B's stray one


def test_page_support_counts_the_pools_lowest_score_for_a_slot_outside_the_pool():
    # A third page C of one chunk scoring 0.7. Pool of three: B's 0.9, A's 0.8 and 0.8; its lowest is 0.8.
    chunk_scores = np.array([[0.9, 0.8, 0.0, 0.8, 0.0, 0.7]])
    pages = np.array([0, 1, 0, 1, 0, 2])
    support = PageSupport(pages, best=2, pool=3).scores(QUERY, chunk_scores)[0]
    assert support[1] == support[3] == pytest.approx(0.8)  # both of A's chunks in the pool
    assert support[0] == pytest.approx((0.9 + 0.8) / 2)  # B's second slot is outside the pool
    assert support[[2, 4, 5]] == pytest.approx([0.8, 0.8, 0.8])  # outside the pool: its lowest score
    # With the whole page in the pool, a one-chunk page is judged by its one chunk, not padded.
    whole = PageSupport(pages, best=2, pool=6).scores(QUERY, chunk_scores)[0]
    assert whole[5] == pytest.approx(0.7)
    assert whole[0] == pytest.approx(0.45)


def test_the_lead_is_the_title_and_the_first_section_with_text():
    page = Document(A, "Limits", (Section(("Limits",), "  "), Section(("Limits", "Rates"), "Requests wait.\n\nMore.")))
    assert lead_text(page, lambda _: True) == "Limits\nRequests wait.\n\nMore."
    assert lead_text(Document(A, "Empty", (Section(("Empty",), ""),)), lambda _: True) is None


def test_a_long_lead_is_cut_until_the_whole_fits():
    body = " ".join(f"request {n} waits {n % 7} seconds." for n in range(200))
    page = Document(A, "Limits", (Section(("Limits",), body),))
    unlimited = lead_text(page, lambda _: True)
    assert unlimited is not None and tokens.count_tokens(unlimited.split("\n", 1)[1]) == 160
    short = lead_text(page, lambda text: len(text) <= 300)
    assert short is not None and len(short) <= 300 and short.startswith("Limits\nrequest 0 waits 0 seconds.")
    assert body.startswith(short.removeprefix("Limits\n"))
    assert lead_text(page, lambda text: text == "Limits") == "Limits"
