"""The bundled demo: a documentation site (this product's user guide) with its sources and queries files.

``site_dir()`` renders the site (see ``site.py``); ``serve_directory`` serves it, or any folder, on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.demo.site import site_dir  # noqa: F401 - the demo's public entry point

DEMO_DIR = Path(__file__).parent
SOURCES_FILE = DEMO_DIR / "sources.yaml"
QUERIES_FILE = DEMO_DIR / "queries.yaml"
LABELLED_QUERIES_FILE = DEMO_DIR / "labelled_queries.yaml"
# Questions the demo site does not answer: the abstention half of the answer evaluation.
UNANSWERABLE_QUERIES_FILE = DEMO_DIR / "unanswerable_queries.yaml"
# The port the bundled sources.yaml points at.
SITE_PORT = 8764


class _QuietHandler(SimpleHTTPRequestHandler):
    # SimpleHTTPRequestHandler answers If-Modified-Since with 304, which is what a
    # documentation web server does and what incremental crawls rely on.
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


@contextmanager
def serve_directory(directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve a folder over HTTP on loopback for the duration of the block; yields the base URL."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"static-site:{server.server_port}", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
