"""Crawl throughput over the PostgreSQL HTML docs served from loopback.

    apt-get install -y postgresql-doc-15
    uv run python -m tests.crawl.bench_pgdocs [DOCS_DIR]

The server runs in its own process (so it does not share the crawler's GIL), with
HTTP/1.1 keep-alive and TCP_NODELAY like a production web server. Not collected by
pytest: it measures, it does not assert.
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from pipeline.crawl import KnownPage, Source, crawl

DOCS_DIR = "/usr/share/doc/postgresql-doc-15/html"


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(directory: str, ports: multiprocessing.Queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=directory))
    server.daemon_threads = True
    ports.put(server.server_address[1])
    server.serve_forever()


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else DOCS_DIR
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(directory, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=10)
        source = Source(
            "pgdocs", (f"http://127.0.0.1:{port}/index.html",), max_pages=5000, max_depth=50, allow_private_hosts=True
        )
        known: dict[str, KnownPage] = {}
        for label in ("first crawl", "re-crawl (conditional GETs)"):
            started = time.monotonic()
            run = crawl(source, known)
            text_chars = 0
            for result in run:
                text_chars += len(result.html or "")
                known[result.url] = KnownPage(result.url, result.etag, result.last_modified, result.content_hash)
            wall = time.monotonic() - started
            stats = run.stats
            print(f"{label}: outcomes {dict(stats.outcomes)}; reasons {dict(stats.reasons)}")
            print(
                f"  {stats.pages_fetched} pages, {stats.requests} requests, {stats.bytes_downloaded:,} bytes, "
                f"{text_chars:,} characters of HTML in {wall:.2f} s: {stats.pages_fetched / wall:.0f} pages/s, "
                f"{stats.bytes_downloaded / wall / 1e6:.1f} MB/s (max_concurrency_per_host="
                f"{source.max_concurrency_per_host})"
            )
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
