"""Answer quality of the offline extractive answerer on the labelled sets and their unanswerable questions.

    uv run python benchmarks/answer_quality.py [--demo-data DIR] [--postgresql-data DIR]

Computes what the ``answer_evaluation`` asset reports, with the same function
(``pipeline.evaluation.answer_run.run_answer_evaluation``): every labelled question and every question of
the set's unanswerable file is retrieved, reranked by the local rerank service on loopback, packed and
answered by the extractive answerer, then judged (citation precision, answered from relevant,
abstention rate). ``--demo-data`` defaults to a fresh run of the offline demo; the PostgreSQL set is
measured only when ``--postgresql-data`` names a data directory from ``benchmarks/ingest_postgresql.py``.
Caches are in memory, so every run answers afresh.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from corpora import REPO, Corpus, demo_data, open_corpus

from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.answer.protocol import GenerationSettings
from pipeline.ask import Asker
from pipeline.demo import UNANSWERABLE_QUERIES_FILE
from pipeline.embedding import MiniLMEmbedder
from pipeline.evaluation.answer_run import load_unanswerable_set, run_answer_evaluation
from pipeline.local import LocalRerankService, ServiceConfig, StoredEmbeddings
from pipeline.rerank.client import RerankClient
from pipeline.retrieve import synced_search_indexes
from pipeline.stand_ins import local_scorer

UNANSWERABLE = {
    "demo": UNANSWERABLE_QUERIES_FILE,
    "postgresql": REPO / "benchmarks/labels/unanswerable/postgresql15.yaml",
}
SERVICE_KEY = "benchmark-key"


def measure(corpus: Corpus, embedder: MiniLMEmbedder) -> None:
    unanswerable = load_unanswerable_set(UNANSWERABLE[corpus.name], corpus.labels)
    scorer = local_scorer(embedder, known_vectors=StoredEmbeddings(corpus.store.embeddings.iter_embedded_texts))
    with (
        LocalRerankService(ServiceConfig(api_key=SERVICE_KEY), scorer=scorer) as service,
        RerankClient(service.url, SERVICE_KEY, "cohere-rerank-3-5", requests_per_minute=100_000) as client,
    ):
        asker = Asker(
            store=corpus.store,
            indexes=synced_search_indexes(corpus.store, corpus.vectors, corpus.lexical, print),
            embedder=embedder,
            client=client,
            chat=ExtractiveChatModel(),
            generation=GenerationSettings(),
            redact=lambda text: text,
        )
        run = run_answer_evaluation(corpus.labels, unanswerable, asker)
    counts = run.evaluation.counts()
    stats = run.answers.stats
    print(f"\n{corpus.name}: {len(corpus.chunks)} chunks, chat model {run.chat_model}")
    print(run.evaluation.markdown())
    print(
        f"labelled: {counts['labelled_answered']} answered, {counts['labelled_declined']} declined, "
        f"{counts['labelled_failed']} failed; unanswerable: {counts['unanswerable_answered']} answered, "
        f"{counts['unanswerable_declined']} declined, {counts['unanswerable_failed']} failed; "
        f"{stats.prompt_tokens} prompt + {stats.completion_tokens} completion tokens"
    )
    wrongly_answered = [q for q, status in run.evaluation.unanswerable.items() if status == "answered"]
    print(f"unanswerable questions answered anyway: {', '.join(wrongly_answered) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-data", type=Path, help="default: run the offline demo into a temporary directory")
    parser.add_argument("--postgresql-data", type=Path, help="an ingested PostgreSQL 15 manual (optional)")
    arguments = parser.parse_args()
    embedder = MiniLMEmbedder()
    with demo_data(arguments.demo_data) as demo_dir:
        measure(open_corpus("demo", demo_dir, embedder), embedder)
        if arguments.postgresql_data:
            measure(open_corpus("postgresql", arguments.postgresql_data, embedder), embedder)


if __name__ == "__main__":
    main()
