"""Remote-embedding throughput: how close HerokuEmbedder's pacing gets to the model's limits, without failures.

    .venv/bin/python benchmarks/embedding_rate.py [--bound tokens|requests] [--pages 1169]
        [--requests-per-minute 500] [--tokens-per-minute 800000]

Embeds passages through the real :class:`~pipeline.embedding.remote.HerokuEmbedder` against the
local embeddings stand-in on loopback in its ``--fast`` mode (hashed vectors: the service costs
almost no CPU, so what is measured is the client's pacing, not the stand-in's model). The
stand-in enforces both published limits of cohere-embed-multilingual over a sliding minute (429
past either) and counts tokens itself, per input, with its own tokenizer (tiktoken cl100k), which
the client does not share: the client starts from a conservative estimate and calibrates it from
the answers' ``usage``.

``--bound tokens`` (the default) sends the chunks of the PostgreSQL 15 manual as the pipeline
makes them (``embedding_text``, batches of 96): about 15,000 tokens a request, so the 800,000
tokens a minute bind long before the 500 requests. ``--bound requests`` sends each chunk's short
context header line in batches of 8, so the requests bind.

Figures are measured at the server, from the arrival times and token counts it logs: the rate
over the interval from the first arrival to the last, counting what arrived before the last
(n requests span n - 1 intervals), and the most the server saw in any 60 s window, which must not
exceed the limit. The share of the binding limit is the figure to quote; wall time depends on
the limits, not on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.chunking import ChunkingConfig, chunk_document, header_line
from pipeline.embedding import MiniLMEmbedder
from pipeline.embedding.contract import MODEL_REQUESTS_PER_MINUTE, MODEL_TOKENS_PER_MINUTE
from pipeline.embedding.remote import HerokuEmbedder
from pipeline.extract import extract_document
from pipeline.ingest.chunks import chunk_fits
from pipeline.local import EmbeddingServiceConfig, HashedVectors, LocalEmbeddingService

CORPUS_DIR = Path("/usr/share/doc/postgresql-doc-15/html")
KEY = "benchmark-embedding-key"
MODEL = "cohere-embed-multilingual"
WINDOW_SECONDS = 60.0


def manual_chunks(pages: int) -> list[str]:
    """The embedding texts of the manual's first ``pages`` pages, chunked as the pipeline chunks them."""
    if not CORPUS_DIR.is_dir():
        sys.exit(f"{CORPUS_DIR} not found: apt-get install postgresql-doc-15")
    fits = chunk_fits(MiniLMEmbedder().word_piece_counts)
    config = ChunkingConfig()
    texts: list[str] = []
    for path in sorted(CORPUS_DIR.glob("*.html"))[:pages]:
        document = extract_document(path.read_text(encoding="utf-8", errors="replace"), f"https://docs/{path.name}")
        texts.extend(chunk.embedding_text for chunk in chunk_document(document, config, fits=fits))
    return texts


def most_in_window(arrivals: list[tuple[float, int]]) -> int:
    """The largest sum of amounts arriving within any ``WINDOW_SECONDS`` (arrivals sorted by time)."""
    best = total = start = 0
    for at, amount in arrivals:
        total += amount
        while arrivals[start][0] <= at - WINDOW_SECONDS:
            total -= arrivals[start][1]
            start += 1
        best = max(best, total)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bound", choices=("tokens", "requests"), default="tokens")
    parser.add_argument("--pages", type=int, default=1169, help="Manual pages whose chunks are embedded.")
    parser.add_argument("--requests-per-minute", type=int, default=MODEL_REQUESTS_PER_MINUTE[MODEL])
    parser.add_argument("--tokens-per-minute", type=int, default=MODEL_TOKENS_PER_MINUTE[MODEL])
    arguments = parser.parse_args()

    chunks = manual_chunks(arguments.pages)
    if arguments.bound == "tokens":
        texts, inputs_per_request = chunks, 96
    else:
        texts, inputs_per_request = [header_line(text) or text[:80] for text in chunks], 8
    config = EmbeddingServiceConfig(
        api_key=KEY,
        requests_per_minute=arguments.requests_per_minute,
        tokens_per_minute=arguments.tokens_per_minute,
        request_log_limit=len(texts),
    )
    print(
        f"{len(texts)} texts ({sum(map(len, texts)):,} characters) in requests of up to {inputs_per_request}; "
        f"limits {arguments.requests_per_minute} requests/min, {arguments.tokens_per_minute:,} tokens/min"
    )
    with LocalEmbeddingService(config, vectors=HashedVectors()) as service:
        embedder = HerokuEmbedder(
            service.url,
            KEY,
            MODEL,
            inputs_per_request=inputs_per_request,
            requests_per_minute=arguments.requests_per_minute,
            tokens_per_minute=arguments.tokens_per_minute,
        )
        started = time.perf_counter()
        embedded = sum(len(positions) for positions, _ in embedder.iter_document_batches(texts))
        wall = time.perf_counter() - started
        embedder.close()
        logged = sorted(service.requests, key=lambda request: request.received_at)

    accepted = [request for request in logged if request.status == 200]
    refused = len(logged) - len(accepted)
    first, last = accepted[0].received_at, accepted[-1].received_at
    span_minutes = (last - first) / 60
    tokens_before_last = sum(request.tokens or 0 for request in accepted[:-1])
    rates = {
        "requests": (len(accepted) - 1) / span_minutes,
        "tokens": tokens_before_last / span_minutes,
    }
    limits = {"requests": arguments.requests_per_minute, "tokens": arguments.tokens_per_minute}
    windows = {
        "requests": most_in_window([(request.received_at, 1) for request in accepted]),
        "tokens": most_in_window([(request.received_at, request.tokens or 0) for request in accepted]),
    }
    binding = max(rates, key=lambda unit: rates[unit] / limits[unit])
    print(f"embedded {embedded} of {len(texts)} texts in {len(accepted)} requests; {refused} refused (429 or error)")
    print(f"server-counted tokens: {sum(request.tokens or 0 for request in accepted):,}; wall {wall:.1f} s")
    for unit in ("requests", "tokens"):
        share = rates[unit] / limits[unit]
        print(
            f"{unit:>8}/min achieved {rates[unit]:12,.0f}  limit {limits[unit]:10,}  share {share:.3f}"
            f"  most in any 60 s window {windows[unit]:,}"
        )
    print(f"binding limit: {binding}; share of it {rates[binding] / limits[binding]:.3f}")


if __name__ == "__main__":
    main()
