"""Page-level retrieval quality of rankings against labels: nDCG@10, MRR@10, Recall@50.

Computed as trec_eval computes them (``ndcg_cut.10``, ``recip_rank`` on the top 10,
``recall.50``), so figures compare with published TREC-style results; tests/test_metrics.py
checks them against pytrec_eval, which is a test dependency only (it pulls in scipy):

- nDCG@10: the gain of a page is its grade, discounted by log2(rank + 1); the ideal ranking
  orders every labelled page by grade. A query without a page of grade 1 or more scores 0.
- MRR@10: 1 / rank of the first page of grade 1 or more within the top 10, else 0.
- Recall@50: the share of pages of grade 1 or more that are in the top 50.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

# trec_eval's default relevance level: grade 1 (partly answers) counts as relevant.
RELEVANT_GRADE = 1


def ndcg(grades: Mapping[str, int], ranking: Sequence[str], cutoff: int) -> float:
    ideal = _dcg(sorted(grades.values(), reverse=True)[:cutoff])
    return _dcg([grades.get(page, 0) for page in ranking[:cutoff]]) / ideal if ideal > 0 else 0.0


def reciprocal_rank(grades: Mapping[str, int], ranking: Sequence[str], cutoff: int) -> float:
    for rank, page in enumerate(ranking[:cutoff], start=1):
        if grades.get(page, 0) >= RELEVANT_GRADE:
            return 1.0 / rank
    return 0.0


def recall(grades: Mapping[str, int], ranking: Sequence[str], cutoff: int) -> float:
    relevant = {page for page, grade in grades.items() if grade >= RELEVANT_GRADE}
    return len(relevant.intersection(ranking[:cutoff])) / len(relevant) if relevant else 0.0


def _dcg(gains: Sequence[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


# name → (measure, rank cut-off)
_MEASURES: dict[str, tuple[Callable[[Mapping[str, int], Sequence[str], int], float], int]] = {
    "ndcg@10": (ndcg, 10),
    "mrr@10": (reciprocal_rank, 10),
    "recall@50": (recall, 50),
}
METRICS = tuple(_MEASURES)


@dataclass(frozen=True)
class Evaluation:
    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]


def evaluate_rankings(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]) -> Evaluation:
    """Score page rankings (best first) against graded labels; a query without a ranking scores 0.

    A page listed twice counts at its first rank.
    """
    per_query: dict[str, dict[str, float]] = {}
    for query_id, grades in qrels.items():
        ranking = list(dict.fromkeys(rankings.get(query_id, ())))
        per_query[query_id] = {name: measure(grades, ranking, cutoff) for name, (measure, cutoff) in _MEASURES.items()}
    mean = {name: fmean(scores[name] for scores in per_query.values()) if per_query else 0.0 for name in METRICS}
    return Evaluation(mean=mean, per_query=per_query)
