import numpy as np
import pytest

from pipeline.evaluation.chunk_rankings import (
    final_orders,
    page_families,
    per_page_capped,
    rerank_page_support,
    reranked,
)
from pipeline.evaluation.chunk_variants import VariantChunk

A, B = "https://docs.example.com/a.html", "https://docs.example.com/b.html"


def chunk(url: str, text: str) -> VariantChunk:
    return VariantChunk(url, f"Page\n{text}", "Page", ("Page",), text)


CHUNKS = [chunk(A, "alpha one"), chunk(A, "alpha two"), chunk(B, "beta"), chunk(A, "alpha three")]


def test_reranking_orders_the_candidates_by_score_of_their_embedded_texts_ties_in_candidate_order():
    seen = []

    def score(query, documents):
        seen.append((query, list(documents)))
        return [{"Page\nbeta": 0.9, "Page\nalpha three": 0.5}.get(text, 0.1) for text in documents]

    order, scores = reranked({"q1": "which beta"}, {"q1": ["0", "1", "2", "3"]}, CHUNKS, score)
    assert order == {"q1": ["2", "3", "0", "1"]}
    assert scores == {"q1": [0.9, 0.5, 0.1, 0.1]}
    assert seen == [("which beta", [c.embedding_text for c in CHUNKS])]


def test_the_final_order_keeps_two_passages_of_a_page_in_front_and_packs_the_budget():
    ranked = {"q1": ["0", "1", "3", "2"]}
    assert final_orders(ranked, {}, CHUNKS) == {"q1": ["0", "1", "2", "3"]}


def test_a_family_is_its_rankings_in_weight_order():
    family = page_families(["mean"], (0.25, 0.5, 1.0))["dense+mean"]
    assert family == ["dense+mean@0.25", "dense+mean@0.5", "dense+mean@1"]
    assert set(page_families(["mean", "lead"])) == {"dense+mean", "hybrid+mean", "dense+lead", "hybrid+lead"}


def test_a_capped_ranking_skips_a_pages_chunks_past_the_cap_and_keeps_the_order():
    pages = [0, 0, 1, 0, 2, 0]  # chunk → page
    assert per_page_capped(["0", "1", "3", "2", "5", "4"], pages, 2) == ["0", "1", "2", "4"]
    assert per_page_capped(["5", "2"], pages, 1) == ["5", "2"]


def test_rerank_page_support_lifts_a_page_with_several_good_passages_over_a_lone_better_one():
    # Page 0 has one passage scoring 0.9 and two that score nothing; page 1 has three at 0.8, 0.7 and 0.6.
    pages = np.array([0, 0, 0, 1, 1, 1])
    ranked = {"q1": ["0", "3", "4", "5", "1", "2"]}
    scores = {"q1": [0.9, 0.8, 0.7, 0.6, 0.0, 0.0]}
    order, fused = rerank_page_support(ranked, scores, pages, best=3, weight=1.0)
    # Support: page 0 (0.9 + 0 + 0) / 3 = 0.3, page 1 (0.8 + 0.7 + 0.6) / 3 = 0.7.
    assert order == {"q1": ["3", "4", "5", "0", "1", "2"]}
    assert fused["q1"] == pytest.approx([1.5, 1.4, 1.3, 1.2, 0.3, 0.3])
    unchanged, _ = rerank_page_support(ranked, scores, pages, best=3, weight=0.0)
    assert unchanged == ranked
    assert rerank_page_support({"q2": []}, {"q2": []}, pages, best=3, weight=1.0) == ({"q2": []}, {"q2": []})
