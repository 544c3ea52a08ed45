"""Docs sites for the benchmarks, served on loopback from a process of their own.

The server must not share the measured process's GIL (an in-process server's threads would
count as pipeline time), and it answers like a production web server: HTTP/1.1 keep-alive,
TCP_NODELAY, ETag and Last-Modified on every page, 304 to a matching conditional request
(``tests/crawl/site_server.py``). A site is a picklable factory taking the base URL and
returning an object whose ``reply(path)`` answers one path (None: 404), built in the child.
"""

from __future__ import annotations

import mimetypes
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from tests.crawl.site_server import Reply, SiteServer


class Site(Protocol):
    def reply(self, path: str) -> Reply | None: ...


@dataclass(frozen=True)
class DirectorySite:
    """The files of a directory, as a static web server serves them (ETag from mtime and size, like nginx)."""

    directory: Path

    def reply(self, path: str) -> Reply | None:
        relative = path.split("?", 1)[0].lstrip("/") or "index.html"
        file = (self.directory / relative).resolve()
        if not file.is_relative_to(self.directory.resolve()) or not file.is_file():
            return None
        status = file.stat()
        return Reply(
            render=file.read_bytes,
            content_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream",
            headers={
                "ETag": f'"{int(status.st_mtime):x}-{status.st_size:x}"',
                "Last-Modified": formatdate(status.st_mtime, usegmt=True),
            },
        )


def directory_site(directory: Path, base: str) -> DirectorySite:
    """The factory :func:`serve_in_child` takes, for a directory (its files need no base URL)."""
    return DirectorySite(directory)


def _serve(site: Callable[[str], Site], port: int, ports: multiprocessing.Queue) -> None:
    server = SiteServer(keep_log=False, port=port)
    server.fallback = site(server.base).reply
    with server:
        ports.put(server.port)
        threading.Event().wait()  # until the parent terminates this process


@contextmanager
def serve_in_child(site: Callable[[str], Site], port: int = 0) -> Iterator[str]:
    """Serve ``site`` from a child process for the duration of the block; yields the base URL (no trailing /).
    A fixed ``port`` keeps the URLs of a corpus ingested by an earlier run."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = context.Queue()
    child = context.Process(target=_serve, args=(site, port, ports), daemon=True, name="docs-site")
    child.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=60)}"
    finally:
        child.terminate()
        child.join(10)
