"""Rerank throughput: how close the client's even pacing gets to the model's rate limit, without 429s.

    .venv/bin/python benchmarks/rerank_rate.py [--queries 200] [--candidates 50]
        [--limit 250] [--error-rate 0.05] [--workers 8] [--seed 1]

Runs ``--queries`` distinct queries of ``--candidates`` passages each through the real
:class:`RerankClient` (``rerank_many``, ``--workers`` threads, its limiter set to ``--limit``)
and the durable cache (the state store's rerank cache in a fresh SQLite file), against the
local service over loopback enforcing ``--limit`` requests per minute per model (sliding
window, 429 + Retry-After past it) and answering ``--error-rate`` of requests with a 500
(seeded). Then runs the same queries again with a new client, as the next run would.

Passages are the bundled demo site's chunks (their ``embedding_text``, as the pipeline sends
them). The local scorer would embed every text it does not know: each passage and, for its
``heading_dense`` feature, each passage's header line (about 1.4 s per 50 texts on two cores),
which would make the server, not the limit, the bottleneck. The benchmark seeds it with one
random unit vector per passage and per distinct header line instead (it measures pacing, not
ranking), so only the query is embedded per request. The service's own time per request is
printed to show it keeps up; the run stops with an error if the scorer had to embed anything
but the queries.

"Achieved requests/min" is measured at the server, from the arrival times it logs: n requests
arriving between the first and the last span n - 1 intervals, so the rate is
(n - 1) / (last - first) × 60. With fewer requests than one minute's limit this is the pace the
client held, not a count inside a window (200 requests could arrive in 2 s and a sliding
window would allow it). The wall-clock rate (n / time from the first send to the last answer)
is printed beside it, and so is the most requests the server saw in any 60 s window, which
must stay at or under the limit.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.chunking import chunk_document, header_line
from pipeline.demo import QUERIES_FILE, site_dir
from pipeline.embedding import MiniLMEmbedder
from pipeline.extract import extract_document
from pipeline.inference import DEFAULT_PACING_SHARE
from pipeline.local import LocalRerankService, ServiceConfig
from pipeline.queries import load_queries
from pipeline.ranking import StoreRerankCache
from pipeline.rerank import RerankClient, RerankRequest, RerankStats
from pipeline.stand_ins import local_scorer
from pipeline.store.state import StateStore, sqlite_url

KEY = "benchmark-rerank-key"
MODEL = "cohere-rerank-3-5"
EMBEDDING_DIMENSIONS = 384


def demo_passages() -> list[str]:
    """Every chunk of the bundled demo site, as the pipeline would send it."""
    passages: dict[str, None] = {}
    for page in sorted(site_dir().rglob("*.html")):
        document = extract_document(page.read_text(encoding="utf-8"), f"http://demo.invalid/{page.name}")
        passages.update((chunk.embedding_text, None) for chunk in chunk_document(document))
    return list(passages)


def header_lines(passages: Sequence[str]) -> list[str]:
    """The distinct ``Title > H2 > H3`` lines the passages start with, which the scorer embeds on their own."""
    return list(dict.fromkeys(line for passage in passages if (line := header_line(passage)) is not None))


class CountingEmbedder(MiniLMEmbedder):
    """MiniLM that counts the texts it embeds: with every passage and header seeded, only queries should be."""

    def __init__(self) -> None:
        super().__init__()
        self.texts_embedded = 0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.texts_embedded += len(texts)
        return super().embed(texts)


def rerank_requests(passages: Sequence[str], count: int, candidates: int, rng: random.Random) -> list[RerankRequest]:
    questions = [query.query for query in load_queries(QUERIES_FILE)]
    return [
        RerankRequest(
            query_id=f"b{number:04d}",
            query=f"{questions[number % len(questions)]} (variant {number})",
            documents=rng.sample(list(passages), candidates),
        )
        for number in range(count)
    ]


def most_in_any_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    most, start = 0, 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--limit", type=int, default=250, help="Requests per minute, enforced and paced for.")
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()

    rng = random.Random(arguments.seed)
    passages = demo_passages()
    known_texts = passages + header_lines(passages)
    vectors = np.random.default_rng(arguments.seed).standard_normal((len(known_texts), EMBEDDING_DIMENSIONS))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embedder = CountingEmbedder()
    scorer = local_scorer(embedder, cache_size=len(known_texts))
    scorer.seed_vectors(known_texts, vectors.astype(np.float32))
    scorer.warm()
    requests = rerank_requests(passages, arguments.queries, arguments.candidates, rng)
    config = ServiceConfig(
        api_key=KEY,
        requests_per_minute=arguments.limit,
        error_rate=arguments.error_rate,
        seed=arguments.seed,
        request_log_limit=10 * arguments.queries + 100,
    )
    print(
        f"{arguments.queries} queries x {arguments.candidates} candidates ({len(passages)} distinct demo passages), "
        f"limit {arguments.limit}/min enforced by the service, {arguments.error_rate:.0%} injected 500s, "
        f"{arguments.workers} workers, client pacing at {DEFAULT_PACING_SHARE:.0%} of the limit"
    )
    with tempfile.TemporaryDirectory() as data_dir, LocalRerankService(config, scorer=scorer) as service:
        store = StateStore(sqlite_url(Path(data_dir)))
        cache = StoreRerankCache(store)
        with RerankClient(service.url, KEY, MODEL, requests_per_minute=arguments.limit) as client:
            started = time.monotonic()
            first = client.rerank_many(requests, max_workers=arguments.workers, cache=cache)
            wall = time.monotonic() - started
        logged = service.requests
        with RerankClient(service.url, KEY, MODEL, requests_per_minute=arguments.limit) as client:
            second = client.rerank_many(requests, max_workers=arguments.workers, cache=cache)
        resent = len(service.requests) - len(logged)
        store.dispose()

    received = len(logged) + resent
    # One text warms the model; then each request that reaches the scorer embeds its query, nothing else.
    if embedder.texts_embedded > 1 + received:
        raise SystemExit(
            f"the stand-in embedded {embedder.texts_embedded} texts for {received} requests: "
            "texts the benchmark did not seed made the service, not the limit, the bottleneck"
        )
    stats, again = RerankStats.from_outcomes(first), RerankStats.from_outcomes(second)
    arrivals = sorted(entry.received_at for entry in logged)
    sustained = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60
    on_the_clock = len(logged) / wall * 60
    service_ms = statistics.median((entry.finished_at - entry.received_at) * 1000 for entry in logged)
    statuses = [entry.status for entry in logged]
    print()
    print("| figure | first run | second run |")
    print("|---|---|---|")
    print(f"| requests received by the service | {len(logged)} | {resent} |")
    print(
        "| achieved requests/min at the service, (n - 1) / span "
        f"| {sustained:.1f} (ratio {sustained / arguments.limit:.3f}) | - |"
    )
    print(
        "| requests/min on the wall clock, n / run time "
        f"| {on_the_clock:.1f} (ratio {on_the_clock / arguments.limit:.3f}) | - |"
    )
    print(f"| most requests in any 60 s window at the service | {most_in_any_window(arrivals, 60.0)} | - |")
    print(f"| run time | {wall:.1f} s | - |")
    print(f"| failed queries | {stats.failed} | {again.failed} |")
    print(f"| retries | {stats.retries} | {again.retries} |")
    print(f"| injected 500s | {statuses.count(500)} | - |")
    print(f"| 429s (service / client) | {statuses.count(429)} / {stats.rate_limited} | {again.rate_limited} |")
    print(f"| billed search units | {stats.search_units} | {again.search_units} |")
    print(f"| cache hits | {stats.cache_hits} | {again.cache_hits} |")
    print(f"| service time per request, median | {service_ms:.1f} ms | - |")
    print(f"| texts embedded by the stand-in (model warm-up + queries) | {embedder.texts_embedded} | - |")


if __name__ == "__main__":
    main()
