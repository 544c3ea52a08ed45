"""HTTP basic authentication in front of the Dagster webserver, which has no login of its own.

A pure ASGI middleware, so it wraps the webserver's HTTP routes and its GraphQL websocket
alike. ``/health`` answers without credentials for uptime checks. Behind Heroku's router
(``X-Forwarded-Proto: http``) plain HTTP is redirected to HTTPS before credentials are asked
for, so a password never crosses the internet unencrypted.
"""

from __future__ import annotations

import base64
import binascii
import hmac
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


class BasicAuthMiddleware:
    """Admit requests carrying ``username:password`` as HTTP basic credentials; 401 for the rest."""

    def __init__(self, app: ASGIApp, *, username: str, password: str, redirect_plain_http: bool = False) -> None:
        if not password:
            raise ValueError("WEB_PASSWORD is empty: the Dagster UI would be open to anyone")
        self.app = app
        self._expected = f"{username}:{password}".encode("utf-8")
        self.redirect_plain_http = redirect_plain_http

    def __repr__(self) -> str:
        return f"BasicAuthMiddleware(redirect_plain_http={self.redirect_plain_http})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await _respond(send, 200, b"ok\n", [(b"content-type", b"text/plain")])
            return
        headers = dict(scope.get("headers") or [])
        if self.redirect_plain_http and headers.get(b"x-forwarded-proto") == b"http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": UNAUTHORIZED_WEBSOCKET_CLOSE})
                return
            await _respond(send, 308, b"", [(b"location", _https_url(scope, headers).encode("latin-1"))])
            return
        if self._authorized(headers.get(b"authorization")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": UNAUTHORIZED_WEBSOCKET_CLOSE})
            return
        challenge = f'Basic realm="{REALM}", charset="UTF-8"'.encode("latin-1")
        await _respond(send, 401, b"Authentication required\n", [(b"www-authenticate", challenge), (b"content-type", b"text/plain")])

    def _authorized(self, header: bytes | None) -> bool:
        if not header or not header[:6].lower() == b"basic ":
            return False
        try:
            supplied = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        return hmac.compare_digest(supplied, self._expected)


def _https_url(scope: Scope, headers: dict[bytes, bytes]) -> str:
    host = headers.get(b"host", b"").decode("latin-1")
    query = scope.get("query_string") or b""
    path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
    return f"https://{host}{path}" + (f"?{query.decode('latin-1')}" if query else "")


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
