"""Page support: a chunk's dense score plus how well its page as a whole matches the question.

A short section (a parameter description, a note) can match a question better than the page that
answers it. Page support adds to each candidate chunk's cosine ``weight`` times its page's support:
the mean of the page's ``best`` highest chunk scores among the question's ``pool`` nearest chunks.
A page has ``min(best, its chunk count)`` slots, so a one-chunk page is judged by that chunk alone;
a slot whose chunk is not in the pool counts the pool's lowest score. A page with several chunks
about the question then outranks a stray matching paragraph of another page.

Off by default (``Fusion.page_support_weight`` 0): on the three labelled sets it raises the hybrid
order's nDCG@10 (PostgreSQL +0.025 held out) but lowers the candidates' page recall (Recall@50
0.859 → 0.820), and the final context-set order does not move (docs/evaluation.md, "Three labelled
sets"). Set the weight in a ``retrieval_evaluation`` run to measure it with the attached reranker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

BEST = 3  # chunk scores a page's support averages
POOL = 400  # nearest chunks a question's page supports are computed among


def members_page_support(scores: np.ndarray, pages: np.ndarray, slots: np.ndarray, best: int) -> np.ndarray:
    """Each member's page support among ``scores`` (one per member; ``pages``: each member's page row, indexing
    ``slots``): the mean of its page's ``best`` highest member scores over ``slots[page]`` slots, a slot without a
    member counting the lowest member score."""
    floor = scores.min()
    # Members by page, best first within a page; a member's rank within its page picks the best few.
    order = np.lexsort((-scores, pages))
    grouped = pages[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept = rank < best
    sums = np.bincount(grouped[kept], weights=scores[order][kept], minlength=len(slots))
    counts = np.bincount(grouped[kept], minlength=len(slots))
    page_scores = (sums + (slots - counts) * floor) / np.maximum(slots, 1)
    return page_scores[pages]


def page_supported(
    pool: Sequence[tuple[str, float, str]], page_sizes: Mapping[str, int], weight: float, best: int = BEST
) -> list[tuple[str, float]]:
    """``pool`` (a question's nearest chunks as ``(chunk ID, cosine, page URL)``) ordered by cosine + ``weight`` ×
    page support, best first (ties in pool order), with those scores. ``page_sizes``: stored chunks per page URL."""
    if not pool:
        return []
    urls = list(dict.fromkeys(url for _, _, url in pool))
    row = {url: index for index, url in enumerate(urls)}
    pages = np.array([row[url] for _, _, url in pool], dtype=np.intp)
    # A page the store no longer lists (deleted since it was indexed) counts the chunks the pool holds.
    in_pool = np.bincount(pages, minlength=len(urls))
    sizes = np.array([page_sizes.get(url, int(in_pool[index])) for index, url in enumerate(urls)])
    scores = np.array([score for _, score, _ in pool], dtype=np.float64)
    total = scores + weight * members_page_support(scores, pages, np.minimum(sizes, best), best)
    return [(pool[index][0], float(total[index])) for index in np.argsort(-total, kind="stable")]
