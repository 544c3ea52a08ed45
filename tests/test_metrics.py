"""The pipeline's nDCG@10, MRR@10 and Recall@50 equal trec_eval's (pytrec_eval, a test dependency only)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import pytrec_eval

from pipeline.demo import LABELLED_QUERIES_FILE
from pipeline.evaluation.labels import load_labelled_set
from pipeline.evaluation.metrics import METRICS, evaluate_rankings

LABELLED_SETS = [
    LABELLED_QUERIES_FILE,
    Path(__file__).resolve().parents[1] / "benchmarks" / "labels" / "postgresql15.yaml",
]
# metric → (rank cut-off, trec_eval measure, key of its result); trec_eval's reciprocal rank has no cut-off,
# so the run is cut to 10 instead.
TREC_EVAL = {"ndcg@10": (10, "ndcg_cut.10"), "mrr@10": (10, "recip_rank"), "recall@50": (50, "recall.50")}


def trec_eval_scores(qrels, rankings) -> dict[str, dict[str, float]]:
    per_query: dict[str, dict[str, float]] = {query_id: {} for query_id in qrels}
    for name, (cutoff, measure) in TREC_EVAL.items():
        # trec_eval orders a run by score: each rank becomes a descending score.
        run = {
            query_id: {page: float(cutoff - rank) for rank, page in enumerate(ranking[:cutoff])}
            for query_id, ranking in rankings.items()
            if ranking
        }
        scores = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(run)
        key = measure.replace(".", "_")
        for query_id in qrels:
            per_query[query_id][name] = scores.get(query_id, {}).get(key, 0.0)
    return per_query


def random_rankings(qrels, seed: int) -> dict[str, list[str]]:
    """Per query: a shuffle of some of its labelled pages, other queries' pages and unlabelled ones."""
    rng = random.Random(seed)
    every_page = sorted({page for grades in qrels.values() for page in grades})
    rankings = {}
    for query_id, grades in qrels.items():
        if rng.random() < 0.05:
            continue  # no ranking at all
        pool = set(rng.sample(sorted(grades), rng.randint(0, len(grades))))
        pool |= set(rng.sample(every_page, min(len(every_page), rng.randint(0, 40))))
        pool |= {f"unlabelled/{rng.randrange(10_000)}.html" for _ in range(rng.randint(0, 40))}
        rankings[query_id] = rng.sample(sorted(pool), len(pool))
    return rankings


def assert_same_as_trec_eval(qrels, rankings) -> None:
    ours = evaluate_rankings(qrels, rankings).per_query
    reference = trec_eval_scores(qrels, rankings)
    assert ours.keys() == reference.keys()
    for query_id in qrels:
        for name in METRICS:
            assert ours[query_id][name] == pytest.approx(reference[query_id][name], abs=1e-9), (query_id, name)


@pytest.mark.parametrize("labels", LABELLED_SETS, ids=lambda path: Path(path).stem)
def test_on_the_labelled_sets_every_metric_equals_trec_eval_for_random_rankings(labels):
    qrels = load_labelled_set(labels).qrels
    for seed in range(20):
        assert_same_as_trec_eval(qrels, random_rankings(qrels, seed))


@pytest.mark.parametrize("labels", LABELLED_SETS, ids=lambda path: Path(path).stem)
def test_on_the_labelled_sets_the_ideal_and_the_reversed_ranking_score_as_trec_eval(labels):
    qrels = load_labelled_set(labels).qrels
    ideal = {query_id: sorted(grades, key=lambda page: -grades[page]) for query_id, grades in qrels.items()}
    assert evaluate_rankings(qrels, ideal).mean["ndcg@10"] == pytest.approx(1.0)
    assert_same_as_trec_eval(qrels, ideal)
    assert_same_as_trec_eval(qrels, {query_id: ranking[::-1] for query_id, ranking in ideal.items()})


def test_random_grades_and_rankings_equal_trec_eval():
    rng = random.Random(7)
    pages = [f"p{number}.html" for number in range(120)]
    qrels = {
        f"q{number}": {page: rng.choice([0, 0, 1, 2, 3]) for page in rng.sample(pages, rng.randint(1, 30))}
        for number in range(300)
    }
    # Queries whose labels are all grade 0 have nothing relevant: every metric is 0.
    qrels["nothing relevant"] = {"p1.html": 0, "p2.html": 0}
    rankings = {query_id: rng.sample(pages, rng.randint(0, 80)) for query_id in qrels}
    assert_same_as_trec_eval(qrels, rankings)
    assert evaluate_rankings(qrels, rankings).per_query["nothing relevant"] == dict.fromkeys(METRICS, 0.0)
