"""Page-level retrieval quality of rankings against labels: nDCG@10, MRR@10, Recall@50 via pytrec_eval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

import pytrec_eval

# name → (rank cut-off, pytrec_eval measure requested, key of its result)
_MEASURES = {
    "ndcg@10": (10, "ndcg_cut.10", "ndcg_cut_10"),
    # trec_eval's reciprocal rank has no cut-off: the run is cut to 10 instead.
    "mrr@10": (10, "recip_rank", "recip_rank"),
    "recall@50": (50, "recall.50", "recall_50"),
}
METRICS = tuple(_MEASURES)


@dataclass(frozen=True)
class Evaluation:
    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]


def evaluate_rankings(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]) -> Evaluation:
    """Score page rankings (best first) against graded labels; a query without a ranking scores 0."""
    per_query: dict[str, dict[str, float]] = {query_id: {} for query_id in qrels}
    judged = {query_id: dict(grades) for query_id, grades in qrels.items()}
    for name, (cutoff, measure, key) in _MEASURES.items():
        # trec_eval orders by score, so each rank becomes a descending score.
        run = {
            query_id: {path: float(cutoff - rank) for rank, path in enumerate(rankings.get(query_id, [])[:cutoff])}
            for query_id in qrels
        }
        scores = pytrec_eval.RelevanceEvaluator(judged, {measure}).evaluate(
            {query_id: ranking for query_id, ranking in run.items() if ranking}
        )
        for query_id in qrels:
            per_query[query_id][name] = scores.get(query_id, {}).get(key, 0.0)
    mean = {name: fmean(scores[name] for scores in per_query.values()) if per_query else 0.0 for name in METRICS}
    return Evaluation(mean=mean, per_query=per_query)
