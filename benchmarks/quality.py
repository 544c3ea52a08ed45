"""Retrieval-quality ablation on the labelled sets: retrieval, local rerank, and context-set order.

    uv run python benchmarks/quality.py --postgresql-data DIR [--demo-data DIR] [--flask-data DIR] [--json FILE]
        [--page-support-weight W]

``--postgresql-data`` is a data directory ingested from the PostgreSQL 15 manual
(``benchmarks/ingest_postgresql.py``); ``--demo-data`` defaults to a fresh run of the
offline demo. Prints, per labelled set:

- the stages table: what the ``retrieval_evaluation`` asset reports, computed by the
  same function (``pipeline.evaluation.pipeline.evaluate_pipeline``) with the local rerank service
  on loopback; ``--json`` writes it for ``benchmarks/plot_evaluation.py``;
- the ablation table of page-level nDCG@10, MRR@10 and Recall@50 (``pipeline/evaluation/metrics.py``):
  retrieval variants, the local scorer without each feature, and the per-page cap;

then the local scorer's time per query (50 candidates) and the lexical index's
rebuild time. Everything runs through the pipeline's own functions: Chroma for dense
retrieval, the bm25s index, reciprocal-rank fusion, the local scorer the rerank
service uses, the per-page cap and token packing.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from corpora import Corpus, demo_data, open_corpus

from pipeline.defs.context_sets import ContextConfig
from pipeline.embedding import MiniLMEmbedder
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.pipeline import PipelineEvaluation, evaluate_pipeline
from pipeline.evaluation.pipeline import context_order as pipeline_context_order
from pipeline.local import LocalRerankService, ServiceConfig, StoredEmbeddings
from pipeline.local.scoring import FEATURES, WEIGHTS, LocalRelevanceScorer, lexical_scores
from pipeline.ranking import RankingPlan
from pipeline.rerank.client import InMemoryRerankCache, RerankClient
from pipeline.retrieve import Fusion, lexical_candidates, retrieve_candidates
from pipeline.stand_ins import local_scorer
from pipeline.store.lexical import LexicalIndex, sync_lexical
from pipeline.tables import markdown_table

K = 50
TOKEN_BUDGET = 3000
DEFAULT_PAGE_CAP = ContextConfig().max_passages_per_page
Rankings = dict[str, list[str]]
SERVICE_KEY = "benchmark-key"
# The committed weights before heading_dense and page_mass were added.
FOUR_FEATURE_WEIGHTS = {"dense": 1.0, "lexical": 0.4, "coverage": 0.1, "page_support": 0.2}


def plain_words(text: str) -> list[str]:
    """The previous scorer's BM25 analysis: lower-cased words, no stemming, no stopwords."""
    return re.findall(r"\w+", text.lower())


def previous_scorer(scorer: LocalRelevanceScorer) -> Callable[[str, Sequence[str]], list[float]]:
    """The first scorer, before issue 8: 0.7 × cosine + 0.3 × BM25 over the candidates (unstemmed)."""

    def score(query: str, documents: Sequence[str]) -> list[float]:
        fused = 0.7 * scorer.dense_scores(query, documents) + 0.3 * lexical_scores(query, documents, plain_words)
        return [float(value) for value in fused]

    return score


def retrieval(corpus: Corpus, embedder: MiniLMEmbedder, fusion: Fusion | None, lexical_only: bool = False) -> Rankings:
    """Each labelled question's K candidates: hybrid with ``fusion``, dense when it is None, or BM25 alone."""
    if lexical_only:
        found = lexical_candidates(corpus.queries, corpus.lexical, K)
    else:
        lexical = corpus.lexical if fusion is not None else None
        found = retrieve_candidates(
            corpus.queries, corpus.vectors, embedder, K, lexical=lexical, fusion=fusion or Fusion()
        )
    return {query_id: [c.chunk_id for c in ranked] for query_id, ranked in found.items()}


def rerank(corpus: Corpus, candidates: Rankings, score: Callable[[str, Sequence[str]], list[float]]) -> Rankings:
    texts = {query.query_id: query.query for query in corpus.queries}
    reranked = {}
    for query_id, ranking in candidates.items():
        scores = score(texts[query_id], [corpus.chunks[chunk_id].embedding_text for chunk_id in ranking])
        order = sorted(range(len(ranking)), key=lambda index: (-scores[index], index))
        reranked[query_id] = [ranking[index] for index in order]
    return reranked


def context_order(corpus: Corpus, ranked: Rankings, max_per_page: int | None) -> Rankings:
    """The passages of each query's context set, in order, as the context asset packs them."""
    return {
        query_id: pipeline_context_order([corpus.chunks[c] for c in ranking], None, TOKEN_BUDGET, max_per_page)
        for query_id, ranking in ranked.items()
    }


def stages(corpus: Corpus, scorer: LocalRelevanceScorer, page_support_weight: float = 0.0) -> PipelineEvaluation:
    """What the retrieval_evaluation asset computes, with the local rerank service on loopback."""
    with (
        LocalRerankService(ServiceConfig(api_key=SERVICE_KEY), scorer=scorer) as service,
        RerankClient(service.url, SERVICE_KEY, "cohere-rerank-3-5", requests_per_minute=100_000) as client,
    ):
        return evaluate_pipeline(
            corpus.labels,
            corpus.store,
            corpus.vectors,
            corpus.lexical,
            scorer.embedder,
            client,
            RankingPlan(
                top_k=K,
                fusion=Fusion(page_support_weight=page_support_weight),
                token_budget=TOKEN_BUDGET,
                max_passages_per_page=DEFAULT_PAGE_CAP,
            ),
            cache=InMemoryRerankCache(),
        )


def ablation(corpus: Corpus, scorer: LocalRelevanceScorer) -> list[tuple[str, dict[str, float]]]:
    embedder = scorer.embedder
    rows: list[tuple[str, Rankings]] = []
    dense = retrieval(corpus, embedder, None)
    rows.append(("retrieval: dense only (Chroma)", dense))
    rows.append(("retrieval: BM25 only (bm25s)", retrieval(corpus, embedder, None, lexical_only=True)))
    rows.append(
        (
            "retrieval: hybrid RRF, equal weights, depth 50",
            retrieval(corpus, embedder, Fusion(lexical_weight=1.0, depth=K)),
        )
    )
    rows.append(
        ("retrieval: hybrid RRF, equal weights, depth 100", retrieval(corpus, embedder, Fusion(lexical_weight=1.0)))
    )
    rows.append(("retrieval: hybrid RRF, BM25 weight 0.5, depth 50", retrieval(corpus, embedder, Fusion(depth=K))))
    hybrid = retrieval(corpus, embedder, Fusion())
    rows.append(("**retrieval: hybrid RRF, BM25 weight 0.5, depth 100 (default)**", hybrid))
    rows.append(
        ("rerank hybrid: first scorer (0.7 cosine + 0.3 BM25)", rerank(corpus, hybrid, previous_scorer(scorer)))
    )
    four_features = local_scorer(embedder, known_vectors=scorer.known_vectors, weights=FOUR_FEATURE_WEIGHTS)
    rows.append(
        (
            "rerank hybrid: four-feature scorer (before heading_dense, page_mass)",
            rerank(corpus, hybrid, four_features.score),
        )
    )
    rows.append(("rerank dense-only candidates: new scorer", rerank(corpus, dense, scorer.score)))
    reranked = rerank(corpus, hybrid, scorer.score)
    rows.append(("**rerank hybrid: new scorer (default)**", reranked))
    for feature in FEATURES:
        without = local_scorer(embedder, known_vectors=scorer.known_vectors, weights={**WEIGHTS, feature: 0.0})
        rows.append((f"rerank hybrid: new scorer without {feature}", rerank(corpus, hybrid, without.score)))
    for cap in (None, 1, 2, 3):
        label = "no per-page cap" if cap is None else f"at most {cap} passage(s) per page in front"
        label = f"context sets (3,000 tokens), {label}"
        if cap == DEFAULT_PAGE_CAP:
            label = f"**{label} (default)**"
        rows.append((label, context_order(corpus, reranked, cap)))
    return [(label, corpus.evaluate(ranking).mean) for label, ranking in rows]


def scoring_times(
    corpus: Corpus, embedder: MiniLMEmbedder, with_known_vectors: bool, limit: int | None = None
) -> list[float]:
    """Seconds to score each query's 50 hybrid candidates with an empty document cache."""
    known = StoredEmbeddings(corpus.store.embeddings.iter_embedded_texts) if with_known_vectors else None
    if known is not None:
        known.load()  # the service loads them once, on its first request
    scorer = local_scorer(embedder, cache_size=0, known_vectors=known)
    scorer.warm()
    hybrid = retrieval(corpus, embedder, Fusion())
    texts = {query.query_id: query.query for query in corpus.queries}
    seconds = []
    for query_id, ranking in list(hybrid.items())[:limit]:
        documents = [corpus.chunks[chunk_id].embedding_text for chunk_id in ranking]
        started = time.perf_counter()
        scorer.score(texts[query_id], documents)
        seconds.append(time.perf_counter() - started)
    return seconds


def lexical_rebuild_seconds(corpus: Corpus) -> tuple[float, float]:
    """(full rebuild from the state store, check of an unchanged index) in seconds, on a scratch copy."""
    with tempfile.TemporaryDirectory() as scratch:
        index = LexicalIndex(scratch)
        started = time.perf_counter()
        sync_lexical(corpus.store, index)
        rebuild = time.perf_counter() - started
        started = time.perf_counter()
        sync_lexical(corpus.store, index)
        return rebuild, time.perf_counter() - started


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def print_table(results: Mapping[str, list[tuple[str, dict[str, float]]]]) -> None:
    names = list(results)
    columns = [f"{name} {metric}" for name in names for metric in METRICS]
    rows = [
        [label, *(f"{results[name][index][1][metric]:.3f}" for name in names for metric in METRICS)]
        for index, (label, _) in enumerate(results[names[0]])
    ]
    print(markdown_table(["configuration", *columns], rows, right_aligned=columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgresql-data", type=Path, required=True)
    parser.add_argument("--demo-data", type=Path, help="default: run the offline demo into a temporary directory")
    parser.add_argument(
        "--flask-data", type=Path, help="also the Flask set: ingest_postgresql.py DIR --cold-only --corpus flask"
    )
    parser.add_argument("--json", type=Path, help="write each set's stage metrics here (for plot_evaluation.py)")
    parser.add_argument(
        "--page-support-weight", type=float, default=0.0, help="the stages with page support (the run knob)"
    )
    arguments = parser.parse_args()
    embedder = MiniLMEmbedder()
    with demo_data(arguments.demo_data) as demo_dir:
        corpora = {
            "demo": open_corpus("demo", demo_dir, embedder),
            "postgresql": open_corpus("postgresql", arguments.postgresql_data, embedder),
        }
        if arguments.flask_data:
            corpora["flask"] = open_corpus("flask", arguments.flask_data, embedder)
        print(", ".join(f"{c.name}: {len(c.labels.queries)} queries, {len(c.chunks)} chunks" for c in corpora.values()))
        scorers = {
            name: local_scorer(embedder, known_vectors=StoredEmbeddings(corpus.store.embeddings.iter_embedded_texts))
            for name, corpus in corpora.items()
        }
        reports = {
            name: stages(corpus, scorers[name], arguments.page_support_weight) for name, corpus in corpora.items()
        }
        for name, report in reports.items():
            print(f"\n{name} (retrieval_evaluation):\n{report.markdown()}")
        if arguments.json:
            summary = {
                name: {k: report.to_json()[k] for k in ("queries", "plan", "metrics", "gains")}
                for name, report in reports.items()
            }
            arguments.json.write_text(json.dumps(summary, indent=1) + "\n")
        print()
        print_table({name: ablation(corpus, scorers[name]) for name, corpus in corpora.items()})

        postgresql = corpora["postgresql"]
        known = scoring_times(postgresql, embedder, with_known_vectors=True)
        unknown = scoring_times(postgresql, embedder, with_known_vectors=False, limit=10)
        print(
            f"\nscoring 50 candidates, PostgreSQL queries, empty cache: vectors from the state store "
            f"p50 {1000 * statistics.median(known):.0f} ms, p95 {1000 * _percentile(known, 0.95):.0f} ms "
            f"({len(known)} queries); embedding every document p50 {1000 * statistics.median(unknown):.0f} ms "
            f"({len(unknown)} queries)"
        )
        rebuild, unchanged = lexical_rebuild_seconds(postgresql)
        print(
            f"lexical index, {len(postgresql.chunks)} chunks: rebuild from the state store {rebuild:.2f} s, "
            f"sync of an unchanged index {1000 * unchanged:.0f} ms"
        )


if __name__ == "__main__":
    main()
