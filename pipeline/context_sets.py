"""Ranked context sets: each query's best passages packed into a token budget.

A context set is what the downstream QA system reads. Its passages follow the rerank
order, except that a page's passages beyond ``max_per_page`` wait until every other
candidate page had its turn (``diversify_pages``). It always says whether its
order came from the reranker (and which model and API version) or, when reranking
failed for that query, from retrieval alone, so partial results are never
presented as reranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pipeline.store.records import ContextSet
from pipeline.tables import Markdown, markdown_table
from pipeline.tokens import count_tokens


@dataclass(frozen=True)
class RankedPassage:
    chunk_id: str
    url: str
    title: str
    heading_path: tuple[str, ...]
    text: str
    retrieval_rank: int
    retrieval_score: float
    rerank_score: float | None


@dataclass(frozen=True)
class ContextPassage:
    rank: int
    chunk_id: str
    url: str
    title: str
    heading_path: list[str]
    text: str
    tokens: int
    retrieval_rank: int
    retrieval_score: float
    rerank_score: float | None


def diversify_pages(ranked: Sequence[RankedPassage], max_per_page: int | None) -> list[RankedPassage]:
    """Keep at most ``max_per_page`` passages of a page in front; move the rest behind all others.

    Near-duplicate passages of one page (overlapping chunks, a long reference page)
    would otherwise spend the token budget before other relevant pages get in. The
    deferred passages keep their order and still fill whatever budget is left, so a
    query with one relevant page loses nothing. ``None`` keeps the ranked order.
    """
    if max_per_page is None:
        return list(ranked)
    if max_per_page < 1:
        raise ValueError(f"max_per_page must be at least 1 or None, got {max_per_page}")
    taken: dict[str, int] = {}
    front: list[RankedPassage] = []
    deferred: list[RankedPassage] = []
    for passage in ranked:
        taken[passage.url] = taken.get(passage.url, 0) + 1
        (front if taken[passage.url] <= max_per_page else deferred).append(passage)
    return front + deferred


def pack_passages(ranked: Sequence[RankedPassage], token_budget: int) -> list[ContextPassage]:
    """Take passages in ranked order while they fit the budget.

    A passage too large for the remaining budget is skipped rather than ending the
    pack, so a smaller, lower-ranked passage can still use the space; order is kept.
    """
    if token_budget < 1:
        raise ValueError(f"token budget must be at least 1, got {token_budget}")
    packed: list[ContextPassage] = []
    used = 0
    for passage in ranked:
        tokens = count_tokens(passage.text)
        if used + tokens > token_budget:
            continue
        used += tokens
        packed.append(
            ContextPassage(
                rank=len(packed) + 1,
                chunk_id=passage.chunk_id,
                url=passage.url,
                title=passage.title,
                heading_path=list(passage.heading_path),
                text=passage.text,
                tokens=tokens,
                retrieval_rank=passage.retrieval_rank,
                retrieval_score=round(passage.retrieval_score, 6),
                rerank_score=None if passage.rerank_score is None else round(passage.rerank_score, 6),
            )
        )
    return packed


def build_context_set(
    *,
    query_id: str,
    query: str,
    model: str,
    embedding_model: str | None,
    reranked: bool,
    api_version: str | None,
    reason_not_reranked: str | None,
    token_budget: int,
    passages: Sequence[ContextPassage],
) -> ContextSet:
    return ContextSet(
        query_id=query_id,
        query=query,
        model=model,
        embedding_model=embedding_model,
        reranked=reranked,
        api_version=api_version,
        reason_not_reranked=reason_not_reranked,
        token_budget=token_budget,
        tokens=sum(passage.tokens for passage in passages),
        passages=tuple(asdict(passage) for passage in passages),
    )


def markdown_preview(context_sets: Sequence[ContextSet], *, per_query: int = 3, width: int = 80) -> Markdown:
    """A Markdown table of each query's top passages for the Dagster UI."""
    rows = []
    for context_set in context_sets:
        for passage in context_set.passages[:per_query]:
            score = passage["rerank_score"] if passage["rerank_score"] is not None else passage["retrieval_score"]
            snippet = " ".join(passage["text"].split())[:width]
            rows.append(
                (
                    context_set.query_id,
                    passage["rank"],
                    f"[{passage['title']}]({passage['url']})",
                    f"{score:.3f}",
                    snippet,
                )
            )
    return markdown_table(["query", "rank", "source", "score", "passage"], rows)
