"""A real HTTP server on 127.0.0.1 whose pages tests can change between crawls.

Routes map a path (with query) to a :class:`Reply` or to a callable returning one; a path
without a route goes to the ``fallback`` (a generated site answers every path there), else 404.
Replies carrying an ETag or Last-Modified answer conditional requests with 304, like a
real static server. Every request is recorded (path, headers, time, status, body bytes
actually sent) so tests can assert what the crawler did on the wire, unless ``keep_log`` is off
(a benchmark's tens of thousands of requests).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    content_type: str | None = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[], Iterable[bytes]] | None = None  # sent chunked, no Content-Length
    delay: float = 0.0  # seconds before answering
    # Makes the body when it is sent, instead of ``body``: a generated or read page costs nothing for a 304.
    render: Callable[[], bytes | str] | None = None

    def payload(self) -> bytes:
        body = self.render() if self.render is not None else self.body
        return body.encode("utf-8") if isinstance(body, str) else body


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    at: float
    status: int = 0
    sent: int = 0  # body bytes written before the reply finished or the client left
    client_port: int = 0  # one per TCP connection: requests sharing it came over one kept-alive connection
    completed: bool = False  # the whole reply was written
    done: bool = False  # the handler has finished, completed or not


Route = Reply | Callable[[Seen], Reply]


def sequence(*replies: Reply) -> Callable[[Seen], Reply]:
    """A route answering with each reply in turn, then repeating the last one."""
    remaining = list(replies)
    lock = threading.Lock()

    def route(_: Seen) -> Reply:
        with lock:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return route


class SiteServer:
    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        *,
        fallback: Callable[[str], Reply | None] | None = None,
        keep_log: bool = True,
        port: int = 0,
    ) -> None:
        self.routes: dict[str, Route] = {}
        self.fallback = fallback
        self.keep_log = keep_log
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="site-server", daemon=True
        )

    def __enter__(self) -> SiteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def url(self, path: str) -> str:
        return self.base + path

    def page(self, path: str, html: str, **reply: object) -> None:
        self.routes[path] = Reply(body=html, **reply)  # type: ignore[arg-type]

    def requests_for(self, path: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.log if seen.path == path]

    def count(self, path: str) -> int:
        return len(self.requests_for(path))

    def paths(self) -> set[str]:
        with self._lock:
            return {seen.path for seen in self.log}

    def record(self, seen: Seen) -> None:
        if self.keep_log:
            with self._lock:
                self.log.append(seen)

    def reply(self, seen: Seen) -> Reply:
        route = self.routes.get(seen.path)
        if route is not None:
            return route(seen) if callable(route) else route
        generated = self.fallback(seen.path) if self.fallback else None
        return generated or Reply(404, "<html><body>not found</body></html>")


def _handler_for(site: SiteServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as real servers do; otherwise each reply stalls 40 ms

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen = Seen(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                time.monotonic(),
                client_port=self.client_address[1],
            )
            site.record(seen)
            reply = site.reply(seen)
            if reply.delay:
                time.sleep(reply.delay)
            try:
                self._send(seen, reply)
                seen.completed = True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                seen.done = True

        def _send(self, seen: Seen, reply: Reply) -> None:
            headers = dict(reply.headers)
            if reply.content_type:
                headers.setdefault("Content-Type", reply.content_type)
            status = 304 if reply.status == 200 and _not_modified(seen.headers, headers) else reply.status
            seen.status = status
            self.send_response(status)
            for name, value in headers.items():
                if status != 304 or name.lower() in ("etag", "last-modified"):
                    self.send_header(name, value)
            if status == 304:
                self.end_headers()
                return
            if reply.stream is not None:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in reply.stream():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    seen.sent += len(chunk)
                self.wfile.write(b"0\r\n\r\n")
                return
            payload = reply.payload()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            seen.sent = len(payload)

    return Handler


def _not_modified(request: dict[str, str], reply: dict[str, str]) -> bool:
    etag = next((v for k, v in reply.items() if k.lower() == "etag"), None)
    modified = next((v for k, v in reply.items() if k.lower() == "last-modified"), None)
    if "if-none-match" in request:
        return etag is not None and request["if-none-match"] == etag
    return modified is not None and request.get("if-modified-since") == modified


def repeated(chunk: bytes, count: int) -> Callable[[], Iterator[bytes]]:
    """A stream of ``count`` copies of ``chunk``."""
    return lambda: (chunk for _ in range(count))
