"""Refit the local scorer's feature weights (``pipeline/local/scoring.py: WEIGHTS``) on the labelled sets.

    uv run python benchmarks/fit_scorer.py --postgresql-data DIR [--demo-data DIR] [--flask-data DIR] [--features a,b]

Coordinate ascent on page-level nDCG@10 of the reranked hybrid candidates, averaged
over the two labelled sets (so the 52 demo questions weigh as much as the 172
PostgreSQL ones). ``dense`` stays at weight 1 (only ratios matter); each other weight
is searched on a 0.1 grid in [0, 2]. Five folds by query (within each set, seeded)
give the cross-validated figures: every fold's weights are fitted without its
queries. Prints those, the committed weights' figures, and the weights fitted on all
queries, to be copied into ``WEIGHTS`` by hand. ``--flask-data`` scores the committed and the
newly fitted weights on the Flask set, which no fit sees: a refit must not lose there.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from corpora import Corpus, demo_data, open_corpus
from quality import retrieval

from pipeline.embedding import MiniLMEmbedder
from pipeline.local import StoredEmbeddings
from pipeline.local.scoring import FEATURES, WEIGHTS
from pipeline.retrieve import Fusion
from pipeline.stand_ins import local_scorer

FOLDS = 5
GRID = [round(0.1 * step, 1) for step in range(21)]
ROUNDS = 3
SEED = 8


class FeatureTable:
    """Each query's hybrid candidates and their feature rows, computed once."""

    def __init__(self, corpus: Corpus, embedder: MiniLMEmbedder) -> None:
        self.corpus = corpus
        scorer = local_scorer(embedder, known_vectors=StoredEmbeddings(corpus.store.embeddings.iter_embedded_texts))
        texts = {query.query_id: query.query for query in corpus.queries}
        self.candidates = retrieval(corpus, embedder, Fusion())
        # The retrieval baselines the targets are measured against (issue 8).
        self.hybrid_ndcg = corpus.evaluate(self.candidates).mean["ndcg@10"]
        self.dense_ndcg = corpus.evaluate(retrieval(corpus, embedder, None)).mean["ndcg@10"]
        self.features = {
            query_id: scorer.features(texts[query_id], [corpus.chunks[c].embedding_text for c in ranking])
            for query_id, ranking in self.candidates.items()
        }

    def ndcg(self, weights: np.ndarray, query_ids: list[str]) -> float:
        rankings = {}
        for query_id in query_ids:
            scores = self.features[query_id] @ weights
            order = sorted(range(len(scores)), key=lambda index: (-scores[index], index))
            rankings[query_id] = [self.candidates[query_id][index] for index in order]
        evaluation = self.corpus.evaluate(rankings)
        return float(np.mean([evaluation.per_query[query_id]["ndcg@10"] for query_id in query_ids]))


def objective(tables: list[FeatureTable], splits: list[list[str]], weights: np.ndarray) -> float:
    return float(np.mean([table.ndcg(weights, query_ids) for table, query_ids in zip(tables, splits, strict=True)]))


def coordinate_ascent(tables: list[FeatureTable], splits: list[list[str]], free: list[int]) -> np.ndarray:
    """Weights with ``dense`` at 1 and the features at positions ``free`` searched; the rest stay 0."""
    weights = np.array([1.0] + [0.0] * (len(FEATURES) - 1))
    best = objective(tables, splits, weights)
    for _ in range(ROUNDS):
        improved = False
        for position in free:
            for value in GRID:
                trial = weights.copy()
                trial[position] = value
                score = objective(tables, splits, trial)
                if score > best + 1e-9:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return weights


def folds(query_ids: list[str]) -> list[list[str]]:
    shuffled = sorted(query_ids)
    random.Random(SEED).shuffle(shuffled)
    return [shuffled[fold::FOLDS] for fold in range(FOLDS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgresql-data", type=Path, required=True)
    parser.add_argument("--demo-data", type=Path)
    parser.add_argument("--flask-data", type=Path, help="a set only scored, never fitted on")
    parser.add_argument(
        "--features",
        default=",".join(FEATURES[1:]),
        help="comma-separated features to fit beside dense (default: all); the others stay at weight 0",
    )
    arguments = parser.parse_args()
    chosen = [name.strip() for name in arguments.features.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(FEATURES[1:]))
    if unknown:
        parser.error(f"unknown features {unknown}; choose among {', '.join(FEATURES[1:])}")
    free = [FEATURES.index(name) for name in chosen]
    embedder = MiniLMEmbedder()
    with demo_data(arguments.demo_data) as demo_dir:
        tables = [
            FeatureTable(open_corpus("demo", demo_dir, embedder), embedder),
            FeatureTable(open_corpus("postgresql", arguments.postgresql_data, embedder), embedder),
        ]
        all_ids = [list(table.candidates) for table in tables]
        split = [folds(ids) for ids in all_ids]
        held_out: list[dict[str, float]] = [{} for _ in tables]
        for fold in range(FOLDS):
            train = [[q for q in ids if q not in set(parts[fold])] for ids, parts in zip(all_ids, split, strict=True)]
            weights = coordinate_ascent(tables, train, free)
            print(f"fold {fold + 1}: " + ", ".join(f"{n}={w:g}" for n, w in zip(FEATURES, weights, strict=True)))
            for table, parts, scores in zip(tables, split, held_out, strict=True):
                for query_id in parts[fold]:
                    scores[query_id] = table.ndcg(weights, [query_id])
        committed = np.array([WEIGHTS.get(name, 0.0) for name in FEATURES])
        dense_only = np.array([1.0] + [0.0] * (len(FEATURES) - 1))
        for table, ids, scores in zip(tables, all_ids, held_out, strict=True):
            cross_validated = float(np.mean(list(scores.values())))
            print(
                f"{table.corpus.name}: nDCG@10 cross-validated {cross_validated:.3f} "
                f"(− hybrid order {cross_validated - table.hybrid_ndcg:+.3f}, "
                f"− dense retrieval {cross_validated - table.dense_ndcg:+.3f}), "
                f"committed weights {table.ndcg(committed, ids):.3f}, "
                f"dense feature alone {table.ndcg(dense_only, ids):.3f}"
            )
        final = coordinate_ascent(tables, all_ids, free)
        print("fitted on all queries: " + ", ".join(f'"{n}": {w:g}' for n, w in zip(FEATURES, final, strict=True)))
        if arguments.flask_data:
            unseen = FeatureTable(open_corpus("flask", arguments.flask_data, embedder), embedder)
            ids = list(unseen.candidates)
            print(
                f"flask (never fitted on): hybrid order {unseen.hybrid_ndcg:.3f}, committed weights "
                f"{unseen.ndcg(committed, ids):.3f}, weights fitted on all queries {unseen.ndcg(final, ids):.3f}"
            )


if __name__ == "__main__":
    main()
