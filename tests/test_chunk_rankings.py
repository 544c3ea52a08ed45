from pipeline.evaluation.chunk_rankings import final_orders, page_families, reranked
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
