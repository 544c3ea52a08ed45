"""HTTP basic authentication in front of the Dagster webserver, which has no login of its own.

A pure ASGI middleware, so it wraps the webserver's HTTP routes and its GraphQL websocket
alike. ``/health`` answers without credentials for uptime checks. Behind Heroku's router
(``X-Forwarded-Proto: http``) plain HTTP is redirected to HTTPS before credentials are asked
for, so a password never crosses the internet unencrypted.

Wrong credentials are counted per client address: after ``MAX_FAILED_ATTEMPTS`` within
``FAILED_ATTEMPTS_WINDOW_SECONDS`` that address gets 429 with ``Retry-After`` (credentials
unchecked) until its oldest failure leaves the window. Behind Heroku's router the address is
the last ``X-Forwarded-For`` hop, the one the router appends; anywhere else it is the socket's
peer, since any client can write the header.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATH = "/health"
REALM = "Dagster (docs-to-answer pipeline)"
# Close code a browser sees when the websocket handshake lacks credentials (4000-4999: application-defined).
UNAUTHORIZED_WEBSOCKET_CLOSE = 4401
TOO_MANY_FAILURES_WEBSOCKET_CLOSE = 4429
MAX_FAILED_ATTEMPTS = 10
FAILED_ATTEMPTS_WINDOW_SECONDS = 300.0
# Each tracked address holds at most MAX_FAILED_ATTEMPTS timestamps: about 1 MB at the cap.
MAX_TRACKED_ADDRESSES = 10_000


class FailedAttempts:
    """Failed logins per client address over a sliding window, for at most ``max_addresses`` addresses.

    Past the cap, the address whose latest failure is oldest is forgotten first. Only failures
    are recorded: a success (from any address) resets nothing, so a guesser cannot clear its
    count by interleaving a known-good login. Used from the server's event loop only.
    """

    def __init__(
        self,
        *,
        limit: int = MAX_FAILED_ATTEMPTS,
        window_seconds: float = FAILED_ATTEMPTS_WINDOW_SECONDS,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again; None when it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.limit:
            return None
        return failures[0] + self.window_seconds - self._clock()

    def record(self, address: str) -> None:
        failures = self._recent(address) or deque(maxlen=self.limit)
        failures.append(self._clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def _recent(self, address: str) -> deque[float] | None:
        """The address's failures inside the window (older ones dropped); None when there are none."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures


class BasicAuthMiddleware:
    """Admit requests carrying ``username:password`` as HTTP basic credentials; 401 for the rest.

    ``behind_router`` (on Heroku) redirects plain HTTP to HTTPS and counts failures by the last
    ``X-Forwarded-For`` hop; otherwise failures are counted by the socket's peer address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        username: str,
        password: str,
        behind_router: bool = False,
        failed_attempts: FailedAttempts | None = None,
    ) -> None:
        if not password:
            raise ValueError("WEB_PASSWORD is empty: the Dagster UI would be open to anyone")
        self.app = app
        self._expected = f"{username}:{password}".encode()
        self.behind_router = behind_router
        self.failed_attempts = failed_attempts if failed_attempts is not None else FailedAttempts()

    def __repr__(self) -> str:
        return f"BasicAuthMiddleware(behind_router={self.behind_router})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await _respond(send, 200, b"ok\n", [(b"content-type", b"text/plain")])
            return
        headers = dict(scope.get("headers") or [])
        if self.behind_router and headers.get(b"x-forwarded-proto") == b"http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": UNAUTHORIZED_WEBSOCKET_CLOSE})
                return
            await _respond(send, 308, b"", [(b"location", _https_url(scope, headers).encode("latin-1"))])
            return
        address = self._client_address(scope)
        wait = self.failed_attempts.retry_after(address)
        if wait is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": TOO_MANY_FAILURES_WEBSOCKET_CLOSE})
                return
            retry_after = str(max(1, math.ceil(wait))).encode("latin-1")
            body = b"Too many failed logins from this address; try again later\n"
            await _respond(send, 429, body, [(b"retry-after", retry_after), (b"content-type", b"text/plain")])
            return
        authorization = headers.get(b"authorization")
        if self._authorized(authorization):
            await self.app(scope, receive, send)
            return
        # A request without credentials is a browser asking for the prompt, not a guess.
        if authorization is not None:
            self.failed_attempts.record(address)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": UNAUTHORIZED_WEBSOCKET_CLOSE})
            return
        challenge = f'Basic realm="{REALM}", charset="UTF-8"'.encode("latin-1")
        await _respond(
            send,
            401,
            b"Authentication required\n",
            [(b"www-authenticate", challenge), (b"content-type", b"text/plain")],
        )

    def _client_address(self, scope: Scope) -> str:
        if self.behind_router:
            # The router appends the address it accepted the connection from; earlier hops are the client's word.
            forwarded = b",".join(value for name, value in scope.get("headers") or [] if name == b"x-forwarded-for")
            last_hop = forwarded.decode("latin-1").rsplit(",", 1)[-1].strip()
            if last_hop:
                return last_hop
        client = scope.get("client")
        return client[0] if client else "unknown"

    def _authorized(self, header: bytes | None) -> bool:
        if not header or header[:6].lower() != b"basic ":
            return False
        try:
            supplied = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        return hmac.compare_digest(supplied, self._expected)


def proxy_header_options(behind_router: bool) -> dict[str, Any]:
    """uvicorn options that match the middleware's trust: ``X-Forwarded-*`` is believed behind the router only.

    Elsewhere uvicorn would replace the socket's peer with a forged ``X-Forwarded-For`` before
    the middleware sees it (by default it believes the header from loopback).
    """
    if behind_router:
        return {"proxy_headers": True, "forwarded_allow_ips": "*"}
    return {"proxy_headers": False}


def _https_url(scope: Scope, headers: dict[bytes, bytes]) -> str:
    host = headers.get(b"host", b"").decode("latin-1")
    query = scope.get("query_string") or b""
    path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
    return f"https://{host}{path}" + (f"?{query.decode('latin-1')}" if query else "")


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
