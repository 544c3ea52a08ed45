import pytest

from pipeline.context_sets import RankedPassage, build_context_set, diversify_pages, markdown_preview, pack_passages
from pipeline.tokens import count_tokens


def _passage(index: int, words: int, score: float) -> RankedPassage:
    return RankedPassage(
        chunk_id=f"c{index}",
        url=f"http://docs.test/{index}.html",
        title=f"Page {index}",
        heading_path=("Guide", f"Part {index}"),
        text=" ".join(["token"] * words),
        retrieval_rank=index + 1,
        retrieval_score=0.5,
        rerank_score=score,
    )


def test_packing_keeps_order_and_budget_and_skips_what_does_not_fit():
    ranked = [_passage(0, 40, 0.9), _passage(1, 500, 0.8), _passage(2, 30, 0.7), _passage(3, 60, 0.6)]
    packed = pack_passages(ranked, token_budget=100)
    assert [p.chunk_id for p in packed] == ["c0", "c2"]
    assert [p.rank for p in packed] == [1, 2]
    assert sum(p.tokens for p in packed) <= 100
    assert all(p.tokens == count_tokens(p.text) for p in packed)


def test_context_set_reports_tokens_and_rerank_status():
    packed = pack_passages([_passage(0, 10, 0.9)], token_budget=50)
    context_set = build_context_set(
        query_id="q1",
        query="what?",
        model="cohere-rerank-3-5",
        embedding_model="all-MiniLM-L6-v2",
        reranked=False,
        api_version=None,
        reason_not_reranked="RerankServerError: 500",
        token_budget=50,
        passages=packed,
    )
    assert context_set.tokens == packed[0].tokens
    assert context_set.reranked is False and "500" in context_set.reason_not_reranked
    assert context_set.passages[0]["heading_path"] == ["Guide", "Part 0"]
    assert "| q1 | 1 | [Page 0](http://docs.test/0.html) | 0.900 |" in markdown_preview([context_set])


def _on_page(chunk_id: str, url: str) -> RankedPassage:
    return RankedPassage(chunk_id, url, "T", ("T",), f"text of {chunk_id}", 1, 0.5, 0.5)


def test_per_page_cap_defers_extra_passages_behind_other_pages():
    pages = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("a4", "a"), ("c1", "c")]
    ranked = [_on_page(chunk_id, url) for chunk_id, url in pages]
    assert [p.chunk_id for p in diversify_pages(ranked, 2)] == ["a1", "a2", "b1", "c1", "a3", "a4"]
    assert [p.chunk_id for p in diversify_pages(ranked, 1)] == ["a1", "b1", "c1", "a2", "a3", "a4"]
    assert diversify_pages(ranked, None) == ranked
    with pytest.raises(ValueError, match="max_per_page must be at least 1"):
        diversify_pages(ranked, 0)


def test_a_capped_page_still_fills_leftover_budget():
    # One relevant page only: its deferred passages are packed after the others, not dropped.
    ranked = [_on_page("a1", "a"), _on_page("a2", "a"), _on_page("b1", "b")]
    packed = pack_passages(diversify_pages(ranked, 1), token_budget=1000)
    assert [p.chunk_id for p in packed] == ["a1", "b1", "a2"]
